"""Keras callbacks for `model.fit` of a derived network, as `bin/retrain` schedules it."""

import keras


class DropPathSchedule(keras.callbacks.Callback):
    """Ramps the drop-path probability linearly over the epochs, as the reference `train.py` does:
    epoch e (0-based) of E trains with `drop_path_prob * e / E`. The rate is logged per epoch.

    Args:
      drop_path_prob: the final probability (`--drop_path_prob`, the paper's 0.2).
      epochs: E; default: the `epochs` given to `fit`.
    """

    def __init__(self, drop_path_prob=0.2, epochs=None):
        super().__init__()
        if not 0.0 <= float(drop_path_prob) < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob}")
        self.drop_path_prob = float(drop_path_prob)
        self.epochs = epochs

    def _network(self):
        from keras_darts.export.formats import inference_network

        network = inference_network(self.model)
        if not hasattr(network, "set_drop_path_prob"):
            raise ValueError("DropPathSchedule needs a model from keras_darts.build_model")
        return network

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.epochs or self.params.get("epochs")
        self._network().set_drop_path_prob(self.drop_path_prob * epoch / epochs)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["drop_path_prob"] = float(self._network().drop_path_prob.numpy())
