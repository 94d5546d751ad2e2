"""Order of Compression: find the best order in which to chain model compression methods."""
