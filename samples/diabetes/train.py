"""Train the sample model: scikit-learn Ridge regression on the bundled diabetes data set (no download).

Writes a model folder as ShipBot and model_api expect it:
    model.joblib            the fitted estimator
    sample-request.json     five rows of the held-out split, {"data": [[...], ...]}
    sample-response.json    what the model must answer for them, {"result": [...]}
Deterministic: the same scikit-learn gives the same predictions. --alpha makes a different "version".

    python samples/diabetes/train.py OUT_DIR [--alpha 1.0]
"""

import argparse
import json
from pathlib import Path

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--alpha", type=float, default=1.0, help="Ridge regularisation strength")
    args = parser.parse_args()

    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    model = Ridge(alpha=args.alpha).fit(X_train, y_train)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.out_dir / "model.joblib")
    sample = X_test[:5]
    (args.out_dir / "sample-request.json").write_text(json.dumps({"data": sample.tolist()}, indent=1) + "\n")
    (args.out_dir / "sample-response.json").write_text(
        json.dumps({"result": model.predict(sample).tolist()}, indent=1) + "\n")
    print(f"trained Ridge(alpha={args.alpha}), held-out R^2 {model.score(X_test, y_test):.3f} -> {args.out_dir}")


if __name__ == "__main__":
    main()
