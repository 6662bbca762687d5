"""humigraph.model: the site reasoning model, its data, training, quantization and evaluation.

Importing this package (and :mod:`.card`, :mod:`.features`) never imports TensorFlow: the gateway
uses the card and the feature encoding on the edge box, where only a TFLite runtime is installed.
TensorFlow is imported only by the training and quantization modules.
"""
