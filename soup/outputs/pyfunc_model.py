"""The code MLflow stores with a registered soup ("models from code"): no object is pickled."""
from mlflow.models import set_model

from soup.outputs.mlflow_model import SoupModel

set_model(SoupModel())
