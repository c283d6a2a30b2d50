"""``medseg convert-images``: colour masks -> class-index masks, or (``--from``) instance datasets between
formats; both print a count table of what changed and write ``conversion.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.vocabulary import INPUT_NAMES, OUTPUT_NAMES, input_option, output_option, pick

MAX_FILES_SHOWN = 10


def convert_images(
    input: Optional[Path] = input_option("Folder of masks: palette PNGs, RGB/RGBA colour masks or gray index masks; "
                                         "with --from an instance dataset folder or COCO JSON."),
    output: Optional[Path] = output_option("Folder for <stem>.png index masks (or the converted dataset) and "
                                            "conversion.json."),
    palette: Optional[str] = typer.Option(
        None, "--palette", help='Colour table: voc, cityscapes (gtFine_color -> trainIds) or a JSON file '
                                '{"colours": {"0": "#000000", ...}, "ignore_index": 255} (without it palette PNGs '
                                'keep their indices and RGB masks are refused).'),
    to: str = typer.Option("index", "--to", help="What to write: index (class-index PNG masks from colour masks); "
                                                 "with --from: coco, yolo_seg, instance_masks or semantic."),
    source: Optional[str] = typer.Option(
        None, "--from", help="Convert an instance dataset: coco (instances JSON), yolo_seg, instance_masks or "
                             "coco_panoptic (default without --from: colour masks)."),
    multipart: str = typer.Option("largest", "--multipart",
                                  help="--to yolo_seg: an object in several parts keeps its largest part (largest) "
                                       "or becomes one object per part (split); counted either way."),
    coco80: bool = typer.Option(False, "--coco80", help="Remap COCO's 91 category ids to the 80 used ones (1..80)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder of a COCO JSON given as --input."),
) -> None:
    """Convert colour masks to class-index masks (unknown colours -> ignore index, counted), or an instance
    dataset to another format (holes, parts and crowd regions a format cannot hold are counted)."""
    input, output = pick(INPUT_NAMES, input), pick(OUTPUT_NAMES, output)
    if source is not None or to != "index":
        if palette is not None:
            raise typer.BadParameter("--palette converts colour masks; it does not go with --from")
        _convert_instances(input, output, source, to, multipart, coco80, images)
        return
    from medseg.data.image_convert import convert_masks

    result = convert_masks(input, output, palette=palette, to=to)
    typer.echo(f"converted {len(result.files)} mask(s) into {output} (palette: {result.palette or 'file indices'}); "
               f"counts in {result.report}")
    total = sum(result.pixels_per_class.values()) or 1
    for index, pixels in result.pixels_per_class.items():
        name = "ignore" if index == result.ignore_index else result.names.get(index, "")
        typer.echo(f"  {index:>5d} {name:>16s}: {pixels:>12d} px ({100 * pixels / total:5.1f}%)")
    unknown = [f for f in result.files if f.unknown_pixels]
    if unknown:
        typer.secho(f"warning: {result.unknown_pixels} pixel(s) in {len(unknown)} file(s) have colours not in the "
                    f"table and were set to {result.ignore_index}:", fg=typer.colors.YELLOW, err=True)
        for f in unknown[:MAX_FILES_SHOWN]:
            colours = ", ".join(f"({r},{g},{b}) x{n}" for r, g, b, n in f.unknown_colours)
            typer.secho(f"  {f.input}: {f.unknown_pixels} px [{colours}]", fg=typer.colors.YELLOW, err=True)
        if len(unknown) > MAX_FILES_SHOWN:
            typer.secho(f"  ... and {len(unknown) - MAX_FILES_SHOWN} more (see {result.report})",
                        fg=typer.colors.YELLOW, err=True)


def _convert_instances(input: Path, output: Path, source: Optional[str], to: str, multipart: str, coco80: bool,
                       images: Optional[Path]) -> None:
    from medseg.data.instance_convert import convert_instances

    result = convert_instances(input, output, source=source, to=to, multipart=multipart, coco80=coco80,
                               images=images)
    typer.echo(f"converted {result.images} image(s), {result.instances} instance(s) from {result.source} to "
               f"{result.target} in {output} ({result.written} object(s) written); counts in {result.report}")
    if not result.losses:
        typer.echo("  nothing lost")
        return
    typer.secho("what the target format could not hold:", fg=typer.colors.YELLOW, err=True)
    for kind, n in result.losses.items():
        images_with = sum(1 for row in result.per_image if kind in row)
        typer.secho(f"  {kind:>22s}: {n:>8d}  ({images_with} image(s))", fg=typer.colors.YELLOW, err=True)


def register(app: typer.Typer) -> None:
    app.command("convert-images")(convert_images)


__all__ = ["register", "convert_images"]
