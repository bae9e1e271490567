"""The Python API: the CLI's runs as functions, a derived network as a Keras model, exports.

  search(train_data, *, output_dir=None, **options) -> SearchResult
  retrain(genotype, train_data, *, test_data=None, output_dir=None, **options) -> RetrainResult
  build_model(genotype, num_classes, input_shape, layers, channels, auxiliary=False,
              variant="cifar") -> keras.Model
  export(model, export_dir, format="saved_model", *, mean, std, class_names, ...) -> path
  Genotype.load(spec) / genotype.save(path); DropPathSchedule (a Keras callback)

`import keras_darts` stays light: these names are imported (with TensorFlow) on first use.
"""

from keras_darts.api.callbacks import DropPathSchedule
from keras_darts.api.inputs import to_image_data
from keras_darts.api.models import build_model
from keras_darts.api.runs import RetrainResult, SearchResult, retrain, search
from keras_darts.export import export_model as export
from keras_darts.genotype import Genotype

__all__ = ["DropPathSchedule", "Genotype", "RetrainResult", "SearchResult", "build_model", "export",
           "retrain", "search", "to_image_data"]
