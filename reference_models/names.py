"""The names of the methods and backbones, in one place that imports nothing (not even torch): config
validation and the intervention registry check names without building a model. The registries in
`methods` and `backbones` are keyed by these and check that they agree."""
METHOD_NAMES = ("simclr", "byol", "vicreg", "mae")
BACKBONE_NAMES = ("tiny_convnet", "resnet18", "vit")
