"""The doctor's checks of what runs inside the workers: the Spark NLP runtime (packages, their
versions, whether its JVM jar is resolved) and the licence (readable, covering the licensed hub
folders, not expiring soon)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from nlphub.doctor.core import Context, Finding, fail, ok, one_line, skip, warn
from nlphub.hub.licence import Licence, LicenceError, licence_problem, load_licence

__all__ = [
    "SparkFacts",
    "find_jar",
    "judge_licence",
    "judge_spark",
    "licence_check",
    "spark_check",
]

_JAR_FIX = (
    "put the Spark NLP jar of the installed version (Maven com.johnsnowlabs.nlp:spark-nlp_…) "
    "in $SPARK_HOME/jars, or name it in spark.jars / spark.jars.packages "
    "(spark-defaults.conf or PYSPARK_SUBMIT_ARGS); `nlphub doctor --deep` starts Spark to load it"
)


# -- Spark NLP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkFacts:
    """What the Spark NLP check observed. `deep` is None when Spark was not started, "" when
    the jar loaded, else why not (`nlphub.embeddings.spark.sparknlp.sparknlp_available`)."""

    pyspark: str | None
    sparknlp: str | None
    import_error: str | None = None
    setting: str | None = None
    jar: str | None = None
    deep: str | None = None


def judge_spark(facts: SparkFacts) -> list[Finding]:
    """The packages (missing ones are warnings: Spark is needed only by the spark and sparknlp:
    embeddings platforms), then the jar (a warning when not resolved: only Spark can tell for
    sure, with --deep)."""
    name = "spark nlp"
    if facts.pyspark is None:
        return [
            warn(
                "spark",
                "pyspark is not installed: the spark and sparknlp: embeddings platforms cannot run",
                "pip install 'nlphub[spark]' spark-nlp",
                name=name,
            )
        ]
    if facts.sparknlp is None:
        found = [
            warn(
                "spark",
                f"python package spark-nlp is not installed (pyspark {facts.pyspark}): "
                "sparknlp: embeddings cannot run, and hub downloads match only "
                "NLPHUB_LIBRARY_VERSIONS",
                "pip install spark-nlp (the version your annotation platform runs)",
                name=name,
            )
        ]
        return [*found, skip("spark", "not checked: no spark-nlp package", name="spark nlp jar")]
    if facts.import_error is not None:
        first = fail(
            "spark",
            f"spark-nlp {facts.sparknlp} is installed but does not import: {facts.import_error}",
            f"reinstall spark-nlp for pyspark {facts.pyspark}",
            name=name,
        )
    elif facts.setting is not None and facts.setting != facts.sparknlp:
        first = warn(
            "spark",
            f"NLPHUB_LIBRARY_VERSIONS says spark-nlp={facts.setting}, but {facts.sparknlp} is "
            "installed: downloads are picked for the setting's version",
            "correct NLPHUB_LIBRARY_VERSIONS, or leave spark-nlp out of it",
            name=name,
        )
    else:
        first = ok("spark", f"spark-nlp {facts.sparknlp} on pyspark {facts.pyspark}", name=name)
    return [first, _judge_jar(facts)]


def _judge_jar(facts: SparkFacts) -> Finding:
    name = "spark nlp jar"
    if facts.deep is not None:
        if facts.deep == "":
            return ok("spark", "Spark started and loaded the Spark NLP jar", name=name)
        if facts.deep.startswith("cannot start Spark"):
            return fail(
                "spark",
                facts.deep,
                "install Java 17 (JAVA_HOME) and check NLPHUB_SPARK_MASTER",
                name=name,
            )
        return warn("spark", facts.deep, _JAR_FIX, name=name)
    if facts.jar is not None:
        return ok("spark", f"resolved: {facts.jar} (not loaded: --deep loads it)", name=name)
    return warn(
        "spark", "jar not resolved: sparknlp: embeddings fail without it", _JAR_FIX, name=name
    )


def _submit_items(args: str) -> Iterable[tuple[str, str]]:
    """(key, value) of the jar options in a spark-submit command line (PYSPARK_SUBMIT_ARGS)."""
    words = shlex.split(args)
    for i, word in enumerate(words[:-1]):
        nxt = words[i + 1]
        if word == "--jars":
            yield "spark.jars", nxt
        elif word == "--packages":
            yield "spark.jars.packages", nxt
        elif word == "--conf" and "=" in nxt:
            key, _, value = nxt.partition("=")
            yield key.strip(), value.strip()


def _defaults_items(path: Path) -> Iterable[tuple[str, str]]:
    """(key, value) lines of a spark-defaults.conf."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            yield parts[0], parts[1].strip()


def _is_sparknlp_jar(name: str) -> bool:
    base = name.rsplit("/", 1)[-1].lower()
    return base.startswith("spark-nlp") and base.endswith(".jar")


def find_jar(environ: dict[str, str], pyspark_dir: Path | None) -> str | None:
    """Where the Spark NLP jar would come from when Spark starts, found without starting it:
    spark.jars / spark.jars.packages in PYSPARK_SUBMIT_ARGS or spark-defaults.conf, or a
    spark-nlp*.jar in $SPARK_HOME/jars or pyspark's own jars folder. None when not found."""
    items: list[tuple[str, str, str]] = [
        (k, v, "PYSPARK_SUBMIT_ARGS")
        for k, v in _submit_items(environ.get("PYSPARK_SUBMIT_ARGS", ""))
    ]
    homes = [Path(environ["SPARK_HOME"])] if environ.get("SPARK_HOME") else []
    if pyspark_dir is not None:
        homes.append(pyspark_dir)
    conf_dirs = [Path(environ["SPARK_CONF_DIR"])] if environ.get("SPARK_CONF_DIR") else []
    conf_dirs += [home / "conf" for home in homes]
    for folder in conf_dirs:
        conf = folder / "spark-defaults.conf"
        items += [(k, v, str(conf)) for k, v in _defaults_items(conf)]
    for key, value, where in items:
        entries = [e.strip() for e in value.split(",") if e.strip()]
        if key == "spark.jars":
            for entry in entries:
                if _is_sparknlp_jar(entry):
                    return f"{entry} (spark.jars in {where})"
        elif key == "spark.jars.packages":
            for entry in entries:
                if entry.lower().startswith("com.johnsnowlabs.nlp:spark-nlp"):
                    return f"{entry} (spark.jars.packages in {where}; fetched when Spark starts)"
    for home in homes:
        try:
            jars = sorted((home / "jars").glob("spark-nlp*.jar"))
        except OSError:
            jars = []
        if jars:
            return str(jars[-1])
    return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def spark_check(ctx: Context) -> list[Finding]:
    import importlib.util

    pyspark = _version("pyspark")
    sparknlp = _version("spark-nlp")
    import_error = None
    pyspark_dir = None
    if pyspark is not None:
        spec = importlib.util.find_spec("pyspark")
        if spec is not None and spec.origin:
            pyspark_dir = Path(spec.origin).parent
    if sparknlp is not None and pyspark is not None:
        try:
            import sparknlp as _sparknlp  # noqa: F401  (importable is what is checked)
        except Exception as exc:
            import_error = one_line(exc)
    deep = None
    if ctx.deep and sparknlp is not None and pyspark is not None and import_error is None:
        from nlphub.embeddings.spark.sparknlp import sparknlp_available

        deep = sparknlp_available() or ""
    facts = SparkFacts(
        pyspark=pyspark,
        sparknlp=sparknlp,
        import_error=import_error,
        setting=ctx.settings.library_versions.get("spark-nlp"),
        jar=find_jar(dict(os.environ), pyspark_dir) if sparknlp is not None else None,
        deep=deep,
    )
    return judge_spark(facts)


def spark_budget(ctx: Context) -> float:
    """Starting Spark (--deep) takes a JVM's start-up: at least two minutes' budget."""
    return max(ctx.timeout, 120.0) if ctx.deep else max(ctx.timeout, 10.0)


# -- licence -------------------------------------------------------------------------------------


def judge_licence(
    path: Path | None,
    licence: Licence | None,
    *,
    error: str | None = None,
    editions: Sequence[str] = (),
    now: datetime | None = None,
    warn_days: int = 30,
) -> Finding:
    """Readable, covering the `editions` of the licensed hub folders, not expired, and not
    expiring within `warn_days` (a warning)."""
    moment = now or datetime.now(UTC)
    fix_file = "set NLPHUB_LICENSE_FILE to your licence's JSON file"
    if error is not None:
        return fail("licence", error, "correct the licence file (README: licences)")
    if licence is None or path is None:
        if editions:
            return fail(
                "licence",
                f"licensed hub folders are configured ({', '.join(editions)}) but no licence: "
                "NLPHUB_LICENSE_FILE is not set",
                fix_file,
            )
        return ok("licence", "none configured (Open Source hub folders only)")
    if licence.expired(moment):
        return fail(
            "licence",
            f"{path} expired on {licence.expires_text}: licensed resources cannot be "
            "downloaded or deployed",
            "renew the licence and replace the file",
        )
    problems = [p for e in editions if (p := licence_problem(e, licence, now=moment))]
    if problems:
        return fail("licence", f"{path}: {'; '.join(problems)}", "get a licence that covers it")
    left = licence.expiry - moment
    days = left.days
    covers = ", ".join(licence.editions)
    if left.total_seconds() < warn_days * 86400:
        return warn(
            "licence",
            f"{path} expires on {licence.expires_text}, in {days} day{'s' if days != 1 else ''}",
            "renew it before then",
        )
    return ok(
        "licence",
        f"{licence.licensee}: {covers}, valid until {licence.expires_text} ({days} days)",
    )


def licence_check(ctx: Context) -> list[Finding]:
    from nlphub.hub.catalog import folders_from_settings
    from schemas.editions import OPEN_SOURCE

    try:
        folders = folders_from_settings(ctx.settings)
    except ValueError as exc:
        return [fail("licence", f"NLPHUB_LICENSED_HUB_URLS: {exc}", "correct the setting")]
    editions = sorted({f.edition for f in folders if f.edition != OPEN_SOURCE})
    path = ctx.settings.license_file
    try:
        licence = load_licence(path)
    except LicenceError as exc:
        return [judge_licence(path, None, error=str(exc), editions=editions)]
    return [judge_licence(path, licence, editions=editions, warn_days=ctx.licence_days)]
