"""What any training needs, method or not: data, models, tasks, the loop, checkpoints, speed, processes, sizes.

``data`` (CIFAR-10, photos, embedded stand-ins, loaders), ``models`` (VGG16-BN, the RGB autoencoder), ``tasks``
(loss and metric of classification and reconstruction), ``train`` (optimisers, the epoch loop, ``fit``),
``checkpoints`` (atomic writes, weights-only loading), ``speed`` (channels_last, bf16, compile), ``distributed``
(DDP under torchrun), ``sizes`` (parameters and MACs).
"""
