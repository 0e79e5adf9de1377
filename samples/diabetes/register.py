"""Train the sample model and register it in an MLflow Model Registry, as a data scientist's pipeline would:
Ridge regression on the bundled diabetes data set, logged with `mlflow.sklearn.log_model` (MLflow's default
serialization, an input example of two rows) and registered as a new version of NAME; `--alias` then points
an alias (e.g. champion) at it. Prints the version as JSON: {"name", "version", "run_id", "r2"}.

Runs with MLflow installed (the local stack's: $SHIPBOT_STATE/mlflow/venv/bin/python):

    python samples/diabetes/register.py --uri http://127.0.0.1:5050 --name diabetes [--alpha 1.0] [--alias champion]

--alpha makes a better or a worse model: 1.0 is the sample's; 50 fits far worse (held-out R^2 about 0.0).
"""

import argparse
import json

import mlflow
import mlflow.sklearn
from mlflow import MlflowClient
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", required=True, help="the tracking server, e.g. http://127.0.0.1:5050")
    parser.add_argument("--name", required=True, help="the registered model's name")
    parser.add_argument("--alpha", type=float, default=1.0, help="Ridge regularisation strength")
    parser.add_argument("--alias", help="point this alias at the new version")
    parser.add_argument("--experiment", default="shipbot-samples")
    args = parser.parse_args()

    mlflow.set_tracking_uri(args.uri)
    mlflow.set_experiment(args.experiment)
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    model = Ridge(alpha=args.alpha).fit(X_train, y_train)
    r2 = model.score(X_test, y_test)
    with mlflow.start_run() as run:
        mlflow.log_params({"alpha": args.alpha})
        mlflow.log_metric("r2", r2)
        info = mlflow.sklearn.log_model(model, name="model", input_example=X_test.iloc[:2],
                                        registered_model_name=args.name)
    version = str(info.registered_model_version)
    if args.alias:
        MlflowClient().set_registered_model_alias(args.name, args.alias, version)
    print(json.dumps({"name": args.name, "version": version, "run_id": run.info.run_id, "r2": round(r2, 4)}))


if __name__ == "__main__":
    main()
