"""Automatic layer registration by scanning the graph (`auto_register_layers`).

`graph` finds where each variable is read inside the loss's ancestors,
`layers` matches those uses to dense, convolution and embedding patterns,
`normalization` to the scale and shift of batch and layer norms, `towers`
splits the uses of one parameter group over the model's towers, and `scan`
decides what to register and calls the collection's public `register_*`
methods.
"""
