"""``medseg convert-images``: palette PNGs and RGB colour masks -> class-index masks, with a count table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.vocabulary import INPUT_NAMES, OUTPUT_NAMES, input_option, output_option, pick

MAX_FILES_SHOWN = 10


def convert_images(
    input: Optional[Path] = input_option("Folder of masks: palette PNGs, RGB/RGBA colour masks or gray index masks."),
    output: Optional[Path] = output_option("Folder for <stem>.png index masks and conversion.json."),
    palette: Optional[str] = typer.Option(
        None, "--palette", help='Colour table: voc, cityscapes (gtFine_color -> trainIds) or a JSON file '
                                '{"colours": {"0": "#000000", ...}, "ignore_index": 255} (without it palette PNGs '
                                'keep their indices and RGB masks are refused).'),
    to: str = typer.Option("index", "--to", help="What to write: index (class-index PNG masks)."),
) -> None:
    """Convert colour masks to class-index masks; colours not in the table become the ignore index and are counted."""
    input, output = pick(INPUT_NAMES, input), pick(OUTPUT_NAMES, output)
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


def register(app: typer.Typer) -> None:
    app.command("convert-images")(convert_images)


__all__ = ["register", "convert_images"]
