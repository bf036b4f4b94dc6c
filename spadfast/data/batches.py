"""Training data for the trainer: dataset coercion (folder, Dataset or synthetic) and the resumable batch stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset, DistributedSampler

from ..runtime import distributed as dist_utils


def volume_dataset(root: str | Path, config, name: str = "train_data") -> Dataset:
    """The one constructor of volume training/validation data from a Decathlon / nnU-Net folder and a config.

    Every path builds volume data here (``spadfast train``, ``SPADTrainer(train_data=folder)``, ``--resume``,
    ``spadfast ablate``), so the slice draws of a run depend on ``config.seed`` alone, not on how it started.

    Args:
        root: the data set folder. config: the run's :class:`~spadfast.config.SPADConfig` (``image_size``,
            ``resize``, ``slice_axis``, ``intensity_window``, ``foreground_fraction``, ``seed``, ``reorient``,
            ``target_spacing``, ``foreground_oversample`` are read).
        name: ``"train_data"``: slices drawn per epoch with ``config.seed`` (random ``image_size`` patches of them
            without ``resize``); anything else (validation): every slice once, whole.

    Returns:
        a :class:`~spadfast.data.volumes.VolumeSlices`, or a :class:`~spadfast.data.patches.PatchDraws` of one.
    """
    from ..io.volume_norm import ct_stats_from_flat, ct_stats_to_flat, is_ct
    from .volumes import VolumeSlices

    train = name == "train_data"
    three_d = config.is_3d
    dataset_ct = config.ct_normalization == "dataset" and not config.intensity_window
    ct_stats = ct_stats_from_flat(config.ct_stats) if dataset_ct else None
    if dataset_ct and ct_stats is None and train:
        ct_stats = "compute"
    data: Dataset = VolumeSlices(
        root, image_size=config.image_size if config.resize and not three_d else None, axis=config.slice_axis,
        window=config.intensity_window or None, reorient=config.reorient,
        target_spacing=None if config.resize else config.target_spacing,
        foreground_fraction=config.foreground_fraction if train and not three_d else None, seed=config.seed,
        ct_stats=ct_stats,
        context_slices=config.context_slices,
    )
    if ct_stats == "compute" and any(s is not None for s in data.ct_stats):
        # stored in the config, hence in every checkpoint: validation, --resume and prediction use these numbers
        config.ct_stats = ct_stats_to_flat(data.ct_stats)
    elif dataset_ct and ct_stats is None and any(is_ct(m) for m in data.modalities):
        raise ValueError(f"`{name}` {str(root)!r} holds CT, which ct_normalization 'dataset' normalises with the "
                         "training set's statistics, and the config holds none (train on these volumes, or set "
                         "ct_normalization: volume)")
    if three_d:  # 3-D patches; validation: fixed (epoch 0) patches, half of them centred on foreground
        from .patches3d import VolumePatches3D

        data = VolumePatches3D(data, config.patch_size_3d, seed=config.seed,
                               foreground_share=config.foreground_oversample if train else 0.5)
        if train and not config.spacing_3d:  # the pooling plan of the model and of every checkpoint
            config.spacing_3d = data.spacing
        return data
    if train and not config.resize:
        from .patches import PatchDraws

        data = PatchDraws(data, config.image_size, seed=config.seed, foreground_share=config.foreground_oversample)
    return data


def _is_volume_folder(path) -> bool:
    from ..io.nifti import is_volume_folder

    return is_volume_folder(path)


def coerce_dataset(
    data: Dataset | str | Path | None, name: str, config, synthetic_n: int = 0, synthetic_seed: int = 0,
) -> Dataset:
    """A training/validation dataset from what the user passed, checked before any work starts.

    Args:
        data: a folder holding ``images/`` and ``masks/``, a Dataset of ``(image [C,H,W] in [-1,1],
            mask [K,H,W] in {0,1})`` or None (``synthetic_n`` synthetic lesions from ``synthetic_seed``).
        name: the argument's name, for errors (``"train_data"``).
        config: the run's :class:`~spadfast.config.SPADConfig`: ``image_size`` and ``image_channels`` (what the
            model expects), ``intensity_norm`` (how folder images map to [-1, 1]), ``mask_channels`` (K =
            num_classes - 1), ``ignore_label`` (image folders: the mask value that marks unannotated pixels, mask
            -1 in every channel there; Datasets may then hold -1 too) and ``resize`` (False keeps image folders at
            native size: training data becomes random ``image_size`` patches, :class:`spadfast.data.patches.PatchDraws`
            with ``config.seed`` and ``foreground_oversample``, validation data whole images). Volume folders
            (Decathlon / nnU-Net layout) go through :func:`volume_dataset`.
    """
    from .folders import SegmentationFolder
    from .synthetic import SyntheticLesions

    image_size, channels, mask_channels = config.image_size, config.image_channels, config.mask_channels
    intensity_norm, resize, ignore_label = config.intensity_norm, config.resize, config.ignore_label
    context = config.context_slices
    if config.is_3d and not (isinstance(data, (str, Path)) and _is_volume_folder(data)) and (
            data is None or isinstance(data, (str, Path))):
        raise ValueError(f"`{name}`: model_type {config.model_type} trains on 3-D patches of volumes, and "
                         f"{'the synthetic lesions are' if data is None else repr(str(data)) + ' is'} 2-D: use a "
                         "Decathlon / nnU-Net volume folder, or a 2-D model_type")
    if context and not (isinstance(data, (str, Path)) and _is_volume_folder(data)) and (
            data is None or isinstance(data, (str, Path))):
        raise ValueError(f"`{name}`: context_slices {context} stacks neighbouring slices of volumes, and "
                         f"{'the synthetic lesions are' if data is None else repr(str(data)) + ' is'} 2-D: use a "
                         "Decathlon / nnU-Net volume folder, or set context_slices: 0")

    if data is None:
        if mask_channels != 1:
            raise ValueError(f"`{name}`: the built-in synthetic lesions are binary; num_classes > 2 needs data")
        return SyntheticLesions(synthetic_n, image_size=image_size, seed=synthetic_seed, channels=channels)
    if isinstance(data, (str, Path)):
        from ..io.nifti import is_volume_folder

        if is_volume_folder(data):
            root, data = data, volume_dataset(data, config, name)
            slices = getattr(data, "dataset", getattr(data, "volumes", data))
            if slices.num_classes != mask_channels + 1:  # refused, never merged into fewer classes
                raise ValueError(
                    f"`{name}` {str(root)!r} holds {slices.num_classes} classes ({', '.join(slices.class_names)}) but "
                    f"`num_classes` is {mask_channels + 1}: set `num_classes: {slices.num_classes}` (spadfast train "
                    "takes it from the data), or relabel the volumes")
        elif resize:
            return SegmentationFolder(data, image_size=image_size, channels=channels,
                                      intensity_norm=intensity_norm, num_classes=mask_channels + 1,
                                      ignore_label=ignore_label)
        else:
            from .patches import PatchDraws

            folder = SegmentationFolder(data, image_size=None, channels=channels, intensity_norm=intensity_norm,
                                        mixed_sizes=True, num_classes=mask_channels + 1,
                                        ignore_label=ignore_label)
            if name != "train_data":
                return folder
            return PatchDraws(folder, image_size, seed=config.seed,
                              foreground_share=config.foreground_oversample)
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(f"`{name}` must be a Dataset, a folder path or None, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"`{name}` is empty")
    from .dict_data import DictDataset, yields_dicts

    if yields_dicts(data):  # MONAI-style {"image", "label"} items
        data = DictDataset(data, mask_channels)
    image, mask = data[0]
    if not isinstance(image, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"`{name}` must yield (image, mask) torch tensors, got ({type(image).__name__}, {type(mask).__name__})"
        )
    if not image.is_floating_point() or not bool(torch.isfinite(image).all()):
        raise ValueError(f"`{name}` images must be finite floating tensors in [-1, 1] (item 0: {image.dtype})")
    allowed = (mask == 0) | (mask == 1) | ((mask == -1) if ignore_label is not None else False)
    if not bool(allowed.all()):
        extra = " (and -1, ignored, with ignore_label)" if ignore_label is not None else ""
        raise ValueError(f"`{name}` masks must hold only 0 and 1{extra} (item 0 holds {mask.unique()[:4].tolist()})")
    if config.is_3d:
        if image.dim() != 4 or image.shape[0] != config.input_channels or mask.dim() != 4 or (
                mask.shape[0] != mask_channels or mask.shape[1:] != image.shape[1:]):
            raise ValueError(f"`{name}` items must be 3-D for model_type {config.model_type}: image "
                             f"[C={config.input_channels},D,H,W] and mask [K={mask_channels},D,H,W], got "
                             f"{tuple(image.shape)} and {tuple(mask.shape)}")
        return data
    if image.dim() != 3 or image.shape[0] != config.input_channels:
        what = "config.image_channels" if not context else (
            f"config.image_channels {channels} x (2 context_slices + 1) slices")
        raise ValueError(
            f"`{name}` images must be [C={config.input_channels},H,W] ({what}), got {tuple(image.shape)}"
        )
    if mask.dim() != 3 or mask.shape[0] != mask_channels or mask.shape[1:] != image.shape[1:]:
        raise ValueError(f"`{name}` masks must be [K={mask_channels},H,W] (num_classes - 1) matching the image, got "
                         f"{tuple(mask.shape)}")
    return data


def training_datasets(config, train_data, val_data) -> tuple[Dataset, Dataset | None, dict]:
    """The trainer's ``(train, val, sources)`` from its arguments and ``config``: folders, volumes or Datasets are
    checked; ``None`` for both means synthetic lesions (a held-out synthetic split validates); ``sources`` is what
    the checkpoint records (:func:`describe_source`). Training volumes set an empty ``config.modalities`` to theirs,
    so that the checkpoint says the model was trained on volumes and how to normalise them."""
    from .volumes import VolumeSlices

    cfg = config
    train = coerce_dataset(train_data, "train_data", cfg, synthetic_n=cfg.synthetic_train, synthetic_seed=cfg.seed)
    sources = {"train": describe_source(train_data, cfg.synthetic_train, cfg.seed), "val": None}
    source = getattr(train, "dataset", getattr(train, "volumes", train))  # what PatchDraws / VolumePatches3D cut
    if isinstance(source, VolumeSlices) and not cfg.modalities:
        cfg.modalities = tuple(source.modalities)
    val = None
    if val_data is None and train_data is None:
        val_seed = cfg.seed + 10_007
        val = coerce_dataset(None, "val_data", cfg, synthetic_n=cfg.synthetic_val, synthetic_seed=val_seed)
        sources["val"] = describe_source(None, cfg.synthetic_val, val_seed)
    elif val_data is not None:
        val = coerce_dataset(val_data, "val_data", cfg)
        sources["val"] = describe_source(val_data)
    return train, val, sources


class BatchIndexStream(torch.utils.data.Sampler):
    """Endless stream of per-rank index batches starting at micro-batch ``start``, epoch after epoch.

    Epoch ``e`` is a ``DistributedSampler`` permutation seeded by (seed, e), so position ``i`` of the stream is a pure
    function of i: resuming at any step needs no iterator state. ``with_epoch``: yield ``(e, index)`` pairs instead
    of indices, for datasets whose items are drawn per epoch (:class:`EpochDraws`).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, start: int = 0, with_epoch: bool = False) -> None:
        self.sampler = DistributedSampler(
            dataset, num_replicas=dist_utils.world_size(), rank=dist_utils.rank(), shuffle=True, seed=seed
        )
        self.batch_size = batch_size
        self.start = start
        self.with_epoch = with_epoch

    def __iter__(self) -> Iterator[list]:
        per_epoch = len(self.sampler)
        first = self.start * self.batch_size
        epoch, pos = divmod(first, per_epoch)
        buf: list = []
        while True:
            self.sampler.set_epoch(epoch)
            indices = list(self.sampler)[pos:]
            buf.extend([(epoch, i) for i in indices] if self.with_epoch else indices)
            pos = 0
            epoch += 1
            while len(buf) >= self.batch_size:
                yield buf[: self.batch_size]
                buf = buf[self.batch_size :]

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


class EpochDraws(Dataset):
    """A :class:`~spadfast.data.volumes.VolumeSlices` addressed by ``(epoch, index)`` keys: item ``(e, i)`` is
    ``dataset.draw(i, e)``. The batch stream's epoch travels with each index, so the draws change every epoch and
    are the same in loader workers (which hold copies of the dataset) and after a resume."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        return self.dataset.draw(index, epoch)


def draws_per_epoch(dataset: Dataset) -> bool:
    """True for a dataset whose items are random draws that should change every epoch (volume slices, patches)."""
    from .patches import PatchDraws
    from .patches3d import VolumePatches3D
    from .volumes import VolumeSlices

    if isinstance(dataset, (PatchDraws, VolumePatches3D)):
        return True
    return isinstance(dataset, VolumeSlices) and dataset.foreground_fraction is not None


def batch_iterator(
    dataset: Dataset, batch_size: int, seed: int, start_micro: int, num_workers: int, pin_memory: bool
) -> Iterator:
    """Batches ``(images [B,C,H,W], masks [B,K,H,W])`` of this rank from micro-batch ``start_micro`` on (a dataset
    drawn per epoch is served through :class:`EpochDraws`)."""
    with_epoch = draws_per_epoch(dataset)
    stream = BatchIndexStream(dataset, batch_size, seed, start_micro, with_epoch=with_epoch)
    loader = torch.utils.data.DataLoader(
        EpochDraws(dataset) if with_epoch else dataset, batch_sampler=stream, num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=False,
        # a private generator: the loader must not consume the global RNG (dropout's), or resume drifts
        generator=torch.Generator().manual_seed(seed + start_micro),
    )
    return iter(loader)


def validation_pairs(dataset: Dataset, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(image, mask)`` pairs validation scores: for volume slices a fixed, seeded, foreground-stratified set
    of ``n`` slices (:func:`spadfast.data.slice_draws.validation_slices`); for any other dataset its first ``n`` items."""
    from .slice_draws import validation_slices
    from .volumes import VolumeSlices

    if isinstance(dataset, VolumeSlices):
        numbers = validation_slices(dataset.foreground_slices, dataset.background_slices, n, seed)
        return [dataset.load_slice(j) for j in numbers]
    return [dataset[i] for i in range(min(n, len(dataset)))]


def folder_fingerprint(root: str | Path) -> str:
    """SHA-256 of a data folder's file list (relative names and sizes): changes when files are added, removed,
    renamed or rewritten with another size; cheap (no file is read)."""
    import hashlib

    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()


def describe_source(data: Dataset | str | Path | None, synthetic_n: int = 0, synthetic_seed: int = 0) -> dict:
    """What a checkpoint records about a dataset argument, so that a resume can find and check it.

    ``{"kind": "folder", "path": absolute path, "fingerprint": folder_fingerprint}``, ``{"kind": "synthetic", "n",
    "seed"}`` or ``{"kind": "dataset", "type": class name}`` (a user Dataset: it must be passed again on resume).
    """
    if data is None:
        return {"kind": "synthetic", "n": synthetic_n, "seed": synthetic_seed}
    if type(data).__name__ == "PatchDraws":  # patches of a folder or volume set: the source is what they cut
        data = data.dataset
    elif type(data).__name__ == "VolumePatches3D":
        data = data.volumes
    root = getattr(data, "root", None) if type(data).__name__ == "VolumeSlices" else None
    if isinstance(data, (str, Path)) or root is not None:
        path = Path(root if root is not None else data).resolve()
        return {"kind": "folder", "path": str(path), "fingerprint": folder_fingerprint(path)}
    return {"kind": "dataset", "type": type(data).__name__}


def source_text(record: dict | None) -> str:
    """A :func:`describe_source` record in words: the folder path, ``synthetic lesions (n=.., seed=..)``, ``a user
    <type>``, or ``none``."""
    if record is None:
        return "none"
    if record.get("kind") == "folder":
        return str(record.get("path"))
    if record.get("kind") == "synthetic":
        return f"synthetic lesions (n={record.get('n')}, seed={record.get('seed')})"
    return f"a user {record.get('type', 'dataset')}"


def resume_data_line(used: dict, given: dict[str, object], recorded: dict, source: str, step: int) -> str:
    """One line saying which data a resumed run trains and validates on and where each came from.

    Args:
        used: the resumed trainer's ``data_sources`` (``{"train": record, "val": record or None}``).
        given: ``{"train": train_data argument, "val": val_data argument}`` (None: not passed).
        recorded: the checkpoint's ``data`` records (empty for checkpoints that predate them).
        source: the checkpoint path. step: the step the run resumes at.
    """
    parts = []
    for key in ("train", "val"):
        if used.get(key) is None:
            origin = ""
        elif given[key] is not None:
            origin = " (given)"
        else:
            origin = " (as recorded)" if recorded.get(key) is not None else " (default)"
        parts.append(f"{key}_data {source_text(used.get(key))}{origin}")
    return f"spadfast: resuming {source} at step {step} on {', '.join(parts)}"


def resume_source(
    record: dict | None, given: Dataset | str | Path | None, name: str, source: str, allow_change: bool = False
) -> Dataset | str | Path | None:
    """The dataset argument a resumed run uses: ``given``, or the recorded folder when ``given`` is None.

    Raises ValueError (naming the checkpoint and the folder) when the recorded folder is gone, when a user Dataset
    was recorded and none is given, or when ``given`` is a folder whose files differ from the recorded ones
    (unless ``allow_change``). A checkpoint without a record (older files) accepts whatever is given.
    """
    if record is None:
        return given
    kind = record.get("kind")
    if given is None:
        if kind == "folder":
            path = Path(record["path"])
            if not path.is_dir():
                raise ValueError(f"checkpoint {source!r} was trained with {name}={str(path)!r}, which no longer "
                                 f"exists: pass the data again ({'--data' if name == 'train_data' else '--val'})")
            if not allow_change and folder_fingerprint(path) != record["fingerprint"]:
                raise ValueError(f"{name} folder {str(path)!r} changed since checkpoint {source!r} was written "
                                 "(files added, removed or rewritten); pass --allow-data-change to resume anyway")
            return path
        if kind == "dataset":
            raise ValueError(f"checkpoint {source!r} was trained on a user {record.get('type')} as {name}: pass it "
                             "again to resume")
        return None
    if isinstance(given, (str, Path)) and not allow_change:
        if kind != "folder":
            raise ValueError(f"checkpoint {source!r} was trained on {kind} data as {name}, not on folder "
                             f"{str(given)!r}; pass --allow-data-change to switch data")
        if folder_fingerprint(given) != record["fingerprint"]:
            raise ValueError(f"{name} folder {str(given)!r} differs from the one checkpoint {source!r} was trained "
                             f"on ({record['path']!r}); pass --allow-data-change to resume on other data")
    return given
