"""Request and response models, one module per API version (a released version's are frozen)."""
