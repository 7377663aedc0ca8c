"""Unit tests for nlphub.doctor.runtime: the Spark NLP verdicts, finding the jar without a JVM,
and the licence verdicts (readable, covering, not expired, not expiring soon)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import SecretStr

from nlphub.doctor.core import Context, Status
from nlphub.doctor.runtime import SparkFacts, find_jar, judge_licence, judge_spark, licence_check
from nlphub.hub.licence import Licence
from schemas.settings import Settings


def statuses(facts: SparkFacts) -> list[tuple[str, Status]]:
    return [(f.name, f.status) for f in judge_spark(facts)]


def test_spark_packages() -> None:
    assert statuses(SparkFacts(pyspark=None, sparknlp=None)) == [("spark nlp", Status.WARN)]
    missing = judge_spark(SparkFacts(pyspark="3.5.1", sparknlp=None))
    assert [f.status for f in missing] == [Status.WARN, Status.SKIP]
    assert "spark-nlp is not installed" in missing[0].summary
    broken = judge_spark(SparkFacts(pyspark="3.5.1", sparknlp="5.4.1", import_error="No module"))
    assert broken[0].status == Status.FAIL
    assert "does not import: No module" in broken[0].summary
    mismatch = judge_spark(SparkFacts(pyspark="3.5.1", sparknlp="5.4.1", setting="5.3.0"))
    assert mismatch[0].status == Status.WARN
    assert "spark-nlp=5.3.0, but 5.4.1 is installed" in mismatch[0].summary
    good = judge_spark(SparkFacts(pyspark="3.5.1", sparknlp="5.4.1", setting="5.4.1"))
    assert good[0].status == Status.OK
    assert good[0].summary == "spark-nlp 5.4.1 on pyspark 3.5.1"


def test_a_jar_not_resolved_is_a_warning_not_a_failure() -> None:
    (_, jar) = judge_spark(SparkFacts(pyspark="3.5.1", sparknlp="5.4.1"))
    assert jar.status == Status.WARN
    assert jar.summary.startswith("jar not resolved")
    assert "--deep" in jar.fix
    (_, found) = judge_spark(SparkFacts(pyspark="3.5.1", sparknlp="5.4.1", jar="/x/spark-nlp.jar"))
    assert found.status == Status.OK and "/x/spark-nlp.jar" in found.summary


def test_deep_verdicts() -> None:
    def jar(deep: str) -> tuple[Status, str]:
        finding = judge_spark(SparkFacts(pyspark="3.5.1", sparknlp="5.4.1", deep=deep))[1]
        return finding.status, finding.summary

    assert jar("")[0] == Status.OK
    assert jar("the Spark NLP jar is not on the classpath (x not found)")[0] == Status.WARN
    assert jar("cannot start Spark (master local[*]): no java")[0] == Status.FAIL


def test_find_jar_without_starting_spark(tmp_path: Path) -> None:
    assert find_jar({}, None) is None
    home = tmp_path / "spark"
    (home / "jars").mkdir(parents=True)
    (home / "jars" / "spark-core_2.12-3.5.1.jar").write_text("")
    assert find_jar({"SPARK_HOME": str(home)}, None) is None
    (home / "jars" / "spark-nlp_2.12-5.4.1.jar").write_text("")
    assert find_jar({"SPARK_HOME": str(home)}, None) == str(home / "jars/spark-nlp_2.12-5.4.1.jar")
    # pyspark's own jars folder
    assert find_jar({}, home) == str(home / "jars/spark-nlp_2.12-5.4.1.jar")
    # named in spark-submit arguments or spark-defaults.conf
    args = {"PYSPARK_SUBMIT_ARGS": "--jars /opt/a.jar,/opt/spark-nlp-5.4.1.jar pyspark-shell"}
    assert find_jar(args, None) == "/opt/spark-nlp-5.4.1.jar (spark.jars in PYSPARK_SUBMIT_ARGS)"
    packages = {"PYSPARK_SUBMIT_ARGS": "--packages com.johnsnowlabs.nlp:spark-nlp_2.12:5.4.1"}
    assert "fetched when Spark starts" in (find_jar(packages, None) or "")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text(
        "# comment\nspark.driver.memory 4g\nspark.jars /srv/spark-nlp-assembly-5.4.1.jar\n"
    )
    assert find_jar({"SPARK_CONF_DIR": str(conf)}, None) == (
        f"/srv/spark-nlp-assembly-5.4.1.jar (spark.jars in {conf / 'spark-defaults.conf'})"
    )


NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def licence(expires: date, editions: tuple[str, ...] = ("Healthcare NLP",)) -> Licence:
    return Licence("Example Hospital", editions, expires, SecretStr("sk-secret"))


def test_licence_verdicts() -> None:
    path = Path("/etc/nlphub/licence.json")
    assert judge_licence(None, None, now=NOW).status == Status.OK
    missing = judge_licence(None, None, editions=["Healthcare NLP"], now=NOW)
    assert missing.status == Status.FAIL and "NLPHUB_LICENSE_FILE is not set" in missing.summary
    unreadable = judge_licence(path, None, error="licence file x is not valid JSON", now=NOW)
    assert unreadable.status == Status.FAIL
    expired = judge_licence(path, licence(date(2025, 5, 31)), now=NOW)
    assert expired.status == Status.FAIL and "expired on 2025-05-31" in expired.summary
    uncovered = judge_licence(path, licence(date(2026, 1, 1)), editions=["Finance NLP"], now=NOW)
    assert uncovered.status == Status.FAIL
    assert "does not cover Finance NLP" in uncovered.summary
    soon = judge_licence(path, licence(date(2025, 6, 20)), now=NOW, warn_days=30)
    assert soon.status == Status.WARN
    assert "expires on 2025-06-20, in 19 days" in soon.summary
    fine = judge_licence(path, licence(date(2026, 1, 1)), editions=["Healthcare NLP"], now=NOW)
    assert fine.status == Status.OK
    assert fine.summary.startswith("Example Hospital: Healthcare NLP, valid until 2026-01-01")
    assert "sk-secret" not in repr([missing, unreadable, expired, uncovered, soon, fine])


def test_licence_check_reads_the_file_and_the_licensed_folders(tmp_path: Path) -> None:
    path = tmp_path / "licence.json"
    path.write_text(
        json.dumps(
            {
                "licensee": "Lab",
                "license_key": "sk-secret",
                "editions": ["Healthcare NLP"],
                "expires_at": "2999-01-01",
            }
        )
    )
    settings = Settings(
        home=tmp_path,
        license_file=path,
        licensed_hub_urls=["https://hub.example/finance/models"],
    )
    (found,) = licence_check(Context(settings))
    assert found.status == Status.FAIL and "does not cover Finance NLP" in found.summary
    path.write_text("{")
    (broken,) = licence_check(Context(settings))
    assert broken.status == Status.FAIL and "is not valid JSON" in broken.summary
