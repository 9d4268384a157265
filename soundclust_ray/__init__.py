"""soundclust_ray: music corpus → features, embeddings and clusters on Ray Data."""

__version__ = "0.1.0"
