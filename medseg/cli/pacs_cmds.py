"""``medseg pacs ping`` and ``medseg pacs query``: a PACS from the command line, over DICOMweb
(``--pacs https://host/dicom-web``) or DIMSE (``--pacs dicom://AE_TITLE@host:port``, with
medseg's own AE title from ``--calling-ae``).

Credentials never come from flags: set MEDSEG_PACS_USER and MEDSEG_PACS_PASSWORD (basic) or
MEDSEG_PACS_TOKEN (bearer), or pass --auth-file with a 0600 file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

pacs_app = typer.Typer(help="PACS (DICOMweb or DIMSE): check a server, query series.", no_args_is_help=True)

PACS_OPTION = typer.Option(..., "--pacs", help="DICOMweb root URL (https://pacs.example.org/dicom-web) or DIMSE "
                           "service dicom://AE_TITLE@host:port.")
AUTH_OPTION = typer.Option("auto", "--auth", help="auto, none, basic (MEDSEG_PACS_USER/MEDSEG_PACS_PASSWORD) "
                           "or bearer (MEDSEG_PACS_TOKEN).")
AUTH_FILE_OPTION = typer.Option(None, "--auth-file", help="0600 file with user:password (basic) or the token (bearer).")
INSECURE_OPTION = typer.Option(False, "--insecure-http", help="Allow http:// or dicom:// to a host that is not "
                               "loopback (unencrypted).")
CALLING_AE_OPTION = typer.Option(None, "--calling-ae", help="With a dicom:// PACS: medseg's own AE title, registered "
                                 "there as a modality (default MEDSEG, or $MEDSEG_PACS_CALLING_AE).")


def _client(pacs: str, auth: str, auth_file: Optional[Path], insecure_http: bool,
            calling_ae: Optional[str] = None) -> Any:
    from medseg.pacs.connect import open_client

    return open_client(pacs, auth=auth, auth_file=auth_file, insecure_http=insecure_http, calling_ae=calling_ae)


@pacs_app.command("ping")
def ping(pacs: str = PACS_OPTION, auth: str = AUTH_OPTION, auth_file: Optional[Path] = AUTH_FILE_OPTION,
         insecure_http: bool = INSECURE_OPTION, calling_ae: Optional[str] = CALLING_AE_OPTION) -> None:
    """Check that the PACS answers: a QIDO-RS query with these credentials, or a C-ECHO."""
    with _client(pacs, auth, auth_file, insecure_http, calling_ae) as client:
        facts = client.ping()
    how = "C-ECHO" if pacs.strip().lower().startswith("dicom://") else "QIDO-RS"
    typer.echo(f"ok: {facts['pacs']} answered {how} in {facts['seconds']:.3f} s (auth {facts['auth']})")


@pacs_app.command("query")
def query(pacs: str = PACS_OPTION,
          where: list[str] = typer.Option([], "--where", help="KEY=VALUE DICOM matching key (repeatable): "
                                          "Modality=CT, StudyDate=20250101-20250131, SeriesDescription=*AX*."),
          series: list[str] = typer.Option([], "--series", help="A SeriesInstanceUID (repeatable)."),
          max_series: Optional[int] = typer.Option(None, "--max-series", help="Refuse a query matching more series."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per series)."),
          auth: str = AUTH_OPTION, auth_file: Optional[Path] = AUTH_FILE_OPTION,
          insecure_http: bool = INSECURE_OPTION, calling_ae: Optional[str] = CALLING_AE_OPTION) -> None:
    """List the series matching the query (UIDs, modality, date, description; no patient data)."""
    from medseg.pacs.query import query_series

    with _client(pacs, auth, auth_file, insecure_http, calling_ae) as client:
        refs = query_series(client, where=where, series=series, max_series=max_series)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in refs], indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(refs)} series")
    for column in ("study date", "modality", "#", "instances", "description", "SeriesInstanceUID"):
        table.add_column(column)
    for r in refs:
        table.add_row(r.study_date, r.modality, str(r.series_number or ""), str(r.n_instances or ""),
                      r.series_description, r.series_uid)
    Console(width=200).print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(pacs_app, name="pacs")


__all__ = ["register", "pacs_app"]
