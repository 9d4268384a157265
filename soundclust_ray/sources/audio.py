"""Audio files (a folder or a manifest of paths): decode → feature families and embeddings."""

from __future__ import annotations

from soundclust_ray.config import RunConfig, check_feature_families
from soundclust_ray.errors import UserError
from soundclust_ray.sources.base import Listing, RunOptions, Say


def check_label_column(label_col: str | None, columns: list[str]) -> None:
    """UserError when ``--label-col`` names no manifest column."""
    from soundclust_ray.manifest import IDENTITY_COLUMNS

    metadata = [c for c in columns if c not in IDENTITY_COLUMNS]
    if label_col and label_col not in metadata:
        shown = ", ".join(metadata)
        raise UserError(f"--label-col {label_col!r} is not a manifest column (columns: {shown})")


class AudioSource:
    """Tracks listed by ``manifest.build_manifest``, computed by the Ray Data products."""

    name = "audio"
    needs_ray = True

    def list_inputs(self, opts: RunOptions, cfg: RunConfig, say: Say) -> Listing:
        from soundclust_ray.audio.probe import add_header_columns
        from soundclust_ray.manifest import build_manifest

        manifest = build_manifest(
            opts.input_path,
            allow_outside_root=opts.allow_outside_root,
            limit=opts.limit,
            id_col=opts.id_col,
            path_col=opts.path_col,
        )
        check_label_column(opts.label_col, list(manifest.columns))
        add_header_columns(manifest, manifest["invalid_reason"] == "")
        try:
            check_feature_families(cfg.features.families)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        say(f"{len(manifest)} tracks in {opts.input_path}")
        return Listing(n_rows=len(manifest), frame=manifest)

    def products(self, cfg: RunConfig) -> list[str]:
        from soundclust_ray.pipeline import products_of

        return products_of(cfg)

    def pending(self, listing: Listing, opts: RunOptions, cfg: RunConfig) -> int | None:
        from soundclust_ray.pipeline import pending_tracks

        return pending_tracks(listing.frame, opts.out, cfg, opts.recompute)

    def stage_modules(self, cfg: RunConfig) -> tuple[str, ...]:
        """The feature stages (scipy.signal, librosa: 1.2 s on the 2-core machine), and the
        embedding stages when a model runs."""
        embed = ("soundclust_ray.stages.embed",) if cfg.embed.backends else ()
        return ("soundclust_ray.pipeline", "soundclust_ray.stages.features", *embed)

    def compute(self, listing: Listing, opts: RunOptions, cfg: RunConfig, say: Say) -> dict:
        from soundclust_ray.pipeline import run_pipeline

        return run_pipeline(
            listing.frame,
            opts.out,
            cfg,
            input_desc=opts.input_path,
            progress=say,
            bars=not opts.quiet,
            recompute=opts.recompute,
        )

    def post_steps(self, opts: RunOptions, cfg: RunConfig, info: dict, say: Say) -> None:
        """Audio runs have no step after the products."""


SOURCE = AudioSource()
