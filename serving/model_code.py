"""MLflow models-from-code entry: the file logged as the model's code."""

from mlflow.models import set_model

from serving.follower import AliasFollower

set_model(AliasFollower())
