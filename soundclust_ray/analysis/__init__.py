"""Driver-side analysis on the gathered matrix: scaling, clustering, projection, metrics, search."""
