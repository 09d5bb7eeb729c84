"""notebooks/quickstart.ipynb runs top to bottom on the CPU with its parameters (QUICK), as a user
runs it, on the offline CIFAR-10 copy beside the checkout (skipped where it is absent)."""
import json

import nbclient
import nbformat

from tests import test_input_pipeline
from tests import test_launch

NOTEBOOK = test_launch.REPO / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT_SECONDS = 600


def with_parameters(notebook, **values):
  """The notebook with a cell setting `values` after its "parameters" cell (as papermill does)."""
  index = next(i for i, cell in enumerate(notebook.cells)
               if "parameters" in cell.metadata.get("tags", []))
  source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
  return notebook


@test_input_pipeline.requires_offline_cifar10
def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  for name, value in test_launch.launch_environment().items():
    monkeypatch.setenv(name, value)  # the kernel's environment: one CPU device, as a user has
  notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4),
                             WORKDIR=str(tmp_path / "run"), EXPORT_DIR=str(tmp_path / "export"))
  nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_SECONDS, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  outputs = "".join(output.get("text", "") for cell in notebook.cells
                    for output in cell.get("outputs", []))
  assert "the export with jax alone:" in outputs
  metadata = json.loads((tmp_path / "export" / "metadata.json").read_text())
  assert metadata["method"] == "odgq" and metadata["architecture"] == "tiny"
  assert set(metadata["evaluation"]["attacks"]) >= {"fgsm", "pgd20"}
  assert (tmp_path / "run" / "eval" / "robust_vs_eps.png").is_file()
