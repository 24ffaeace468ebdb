"""Forecast the yearly sunspot numbers (1700-2008) one year ahead with a fastrnn GRU.

The data is statsmodels' copy of the yearly sunspot series (``statsmodels.datasets.sunspots``,
nothing is downloaded). The last 40 years (1969-2008) are the test set; everything before is
for training. Each model predicts year t from the years before it only (one-step-ahead), and
is scored on the test years by RMSE and MAE against two baselines:

- seasonal naive: the value one solar cycle (11 years) earlier, ``y[t-11]``;
- ARIMA(p, 0, q) from statsmodels, (p, q) chosen by AIC on the training years among AR(1)
  to AR(9), ARMA(2, 1) and ARMA(3, 1), its parameters fixed after fitting and applied to
  the test years.

The GRU (1 layer, 32 units, a linear head at every step) is trained with Adam on all
44-year windows of the training years (standardised), to predict each next year; the last
22 training years are held out to pick the epoch whose weights are kept (early stopping).
At test time it reads the 44 years before each test year.

Run ``python examples/sunspots_gru.py --out DIR`` (``--quick`` for a short training run); it
prints the errors and writes ``sunspots.png`` and ``metrics.json`` into DIR.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

import fastrnn
from fastrnn.optim import Adam

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py beside this file
from _common import parse_args, pyplot, save

TEST_YEARS = 40
WINDOW = 44      # four solar cycles of context per prediction
SEASON = 11      # the solar cycle, in years
VALIDATION_YEARS = 22  # the end of the training years, for early stopping
ARIMA_ORDERS = [(p, 0) for p in range(1, 10)] + [(2, 1), (3, 1)]  # (p, q) candidates for the AIC


def load_series():
    from statsmodels.datasets import sunspots

    data = sunspots.load_pandas().data
    return data["YEAR"].to_numpy(dtype=int), data["SUNACTIVITY"].to_numpy(dtype=np.float64)


def errors(pred, truth):
    return {"rmse": float(np.sqrt(np.mean((pred - truth) ** 2))), "mae": float(np.mean(np.abs(pred - truth)))}


def windows(z, starts):
    """Inputs ``[WINDOW, len(starts), 1]`` = z[s:s+WINDOW] and next-year targets z[s+1:s+WINDOW+1]."""
    x = np.stack([z[s:s + WINDOW] for s in starts], axis=1)[:, :, None]
    y = np.stack([z[s + 1:s + WINDOW + 1] for s in starts], axis=1)[:, :, None]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def arima_forecast(y, n_train):
    """One-step-ahead ARIMA forecasts of the test years, (p, q) chosen by AIC on the training years."""
    from statsmodels.tsa.arima.model import ARIMA
    from threadpoolctl import threadpool_limits

    best = None
    # the state-space fits multiply tiny matrices: one BLAS thread is fastest (many threads spin
    # for nothing, and on a busy machine the fits get several times slower)
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore")  # convergence chatter of the candidate fits
        for p, q in ARIMA_ORDERS:
            res = ARIMA(y[:n_train], order=(p, 0, q)).fit()
            if best is None or res.aic < best[0]:
                best = (res.aic, (p, 0, q), res)
        _, order, res = best
        full = res.apply(y)  # the same parameters on the whole series
        pred = full.get_prediction(start=n_train, end=len(y) - 1, dynamic=False).predicted_mean
    return np.asarray(pred), order


def gru_forecast(y, n_train, epochs, seed=0):
    """One-step-ahead GRU forecasts of the test years, and the training record.

    The last VALIDATION_YEARS of the training years are held out: after each epoch the model
    forecasts them, and the weights of the epoch with the lowest validation error are kept
    (early stopping; the test years are never looked at)."""
    n_fit = n_train - VALIDATION_YEARS
    mean, std = y[:n_fit].mean(), y[:n_fit].std()
    z = (y - mean) / std
    x_fit, y_fit = windows(z, range(0, n_fit - WINDOW))
    model = fastrnn.SequenceModel(input_size=1, hidden_size=32, num_layers=1, output_size=1, cell="gru",
                                  dtype="float64", seed=seed)

    def predict(first, last):
        """Forecasts of years first..last-1, each from the WINDOW years before it."""
        x = np.stack([z[t - WINDOW:t] for t in range(first, last)], axis=1)[:, :, None]
        with fastrnn.no_grad():
            return model(np.ascontiguousarray(x))[-1, :, 0]

    best = {"val_mse": np.inf}

    def keep_best(epoch, record):
        val = float(np.mean((predict(n_fit, n_train) - z[n_fit:n_train]) ** 2))
        if val < best["val_mse"]:
            best.update(val_mse=val, epoch=epoch, state=model.state_dict())

    fastrnn.train.fit(model, x_fit, y_fit, Adam(model, lr=5e-3), epochs=epochs, batch_size=32, seed=seed,
                      progress=False, callback=keep_best)
    model.load_state_dict(best.pop("state"))
    return predict(n_train, len(y)) * std + mean, best


def main(argv=None):
    args = parse_args(__doc__, "sunspots", epochs=60, quick_epochs=40, argv=argv)
    epochs = args.epochs

    t0 = time.perf_counter()
    years, y = load_series()
    n_train = len(y) - TEST_YEARS
    truth = y[n_train:]
    naive = y[n_train - SEASON:len(y) - SEASON]
    arima, order = arima_forecast(y, n_train)
    gru, best = gru_forecast(y, n_train, epochs, args.seed)
    metrics = {
        "test_years": [int(years[n_train]), int(years[-1])],
        "seasonal_naive": errors(naive, truth),
        "arima": {**errors(arima, truth), "order": list(order)},
        "gru": {**errors(gru, truth), "epochs": epochs, "best_epoch": best["epoch"], "val_mse": best["val_mse"]},
    }
    metrics["seconds"] = time.perf_counter() - t0

    print(f"yearly sunspot numbers, one-step-ahead forecasts of {years[n_train]}-{years[-1]} "
          f"(trained on {years[0]}-{years[n_train - 1]})")
    print(f"{'model':<24}{'RMSE':>8}{'MAE':>8}")
    for name, key in (("seasonal naive (11 y)", "seasonal_naive"), (f"ARIMA{order}", "arima"),
                      (f"fastrnn GRU ({epochs} ep.)", "gru")):
        print(f"{name:<24}{metrics[key]['rmse']:8.2f}{metrics[key]['mae']:8.2f}")
    print(f"{metrics['seconds']:.1f} s")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    start = n_train - 60
    ax.plot(years[start:], y[start:], color="black", lw=1.5, label="observed")
    test_years = years[n_train:]
    ax.plot(test_years, naive, ls=":", label=f"seasonal naive (RMSE {metrics['seasonal_naive']['rmse']:.1f})")
    ax.plot(test_years, arima, ls="--", label=f"ARIMA{order} (RMSE {metrics['arima']['rmse']:.1f})")
    ax.plot(test_years, gru, lw=2, label=f"fastrnn GRU (RMSE {metrics['gru']['rmse']:.1f})")
    ax.axvline(years[n_train] - 0.5, color="grey", lw=0.8)
    ax.set_xlabel("year")
    ax.set_ylabel("sunspot number")
    ax.set_title("Yearly sunspots: one-year-ahead forecasts of the test years")
    ax.legend(loc="upper left", fontsize=8)
    return save(args.out, "sunspots", fig, metrics)


if __name__ == "__main__":
    main()
