"""Layer and loss registration behind `kfac.ops.layer_collection` (API.md §6).

One module per layer kind holds its `register_*` method (bound into
`LayerCollection`), its argument checks and its `LayerKind` (approximation
name -> block class): `fully_connected`, `conv2d`, `convolution`,
`depthwise`, `embedding`, `generic`; `*_multi` variants live with their kind.
Shared: `common` (approximation names, `LayerKind`, the one registration
path), `multi_use` (layers applied several times), `shapes` (static shape and
dtype checks), `keys`/`parameters_dict` (block keys), `uses` (use counts
against the graph), `losses` (the `register_*_predictive_distribution`
methods, loss towers and target checks), `weights` (per-example weights and
masks), `kinds` (the kinds with a per-collection default).

A new layer kind is one module here (its `LayerKind`, checks and register
function, using only `LayerCollection`'s public methods), its block in
`kfac/ops/_blocks/` and its factor in `kfac/ops/_factors/`, plus one line
binding the function in `LayerCollection` (and one in `kinds` if its default
can be set).
"""
