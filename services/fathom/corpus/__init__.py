"""The local document corpus: readers, index builder, store, local web, shipped sample."""
