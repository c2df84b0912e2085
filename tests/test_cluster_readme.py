"""The walkthrough in cluster/README.md, and every command line of the docs and cluster files:
what can run on this machine runs (the WMT14 conversion on a miniature of the published
archives, the local two-node cluster of step 0), what needs a cloud account is listed as such,
and every `--set` given to `python -m job` parses against the config models."""

import gzip
import io
import shlex
import subprocess
import tarfile
from pathlib import Path

import yaml

from job.config import load_config
from job.corpus.files import open_corpus
from job.schema import ParallelFiles

from conftest import ROOT, doc_commands

CLUSTER_README = ROOT / "cluster" / "README.md"
DOCS = [ROOT / "README.md", CLUSTER_README]
WMT14 = ROOT / "cluster" / "wmt14-en-fr.sh"

# First words of commands that need a cloud account, a Docker engine, a Kubernetes cluster or a
# running remote Ray cluster: documented, not run here.
CLOUD = (
    "aws ",
    "gcloud ",
    "gsutil ",
    "kubectl ",
    "docker ",
    "ray up ",
    "ray down ",
    "ray exec ",
    "ray attach ",
    "ray monitor ",
    "ray dashboard ",
    "ray job status ",
    "ray job logs ",
    "ray job list",
    "ray job stop ",
    "bash cluster/aws-iam/create.sh ",
    "pip install boto3",
    "aws configure",
)
# Run here by the tests below (or, for the environment, by `make`).
LOCAL = (
    "bash cluster/wmt14-en-fr.sh ",
    "ray start ",
    "ray stop",
    "ray job submit ",
    "python -m job ",
    "make venv",
    "source .venv/bin/activate",
    "ray --version",
    "ray get-auth-token",
    "export ",
)


def test_every_walkthrough_command_runs_here_or_needs_a_cloud():
    found = doc_commands(CLUSTER_README)
    assert len(found) > 30
    unknown = [c for _, c in found if not c.startswith(CLOUD + LOCAL)]
    assert not unknown, (
        f"classify these (run them in a test, or list them as cloud-only): {unknown}"
    )
    sections = {h for h, _ in found}
    for step in (
        "quotas",
        "bucket",
        "data",
        "image",
        "Start the cluster",
        "Submit",
        "Watch",
        "Bulk translation",
        "Fetch",
        "Tear down",
    ):
        assert any(step.lower() in h.lower() for h in sections), f"no step about {step}"


# ----------------------------------------------------------------------------- --set


def _job_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `python -m job`) of every `python -m job` command line in the docs, in
    comments of the cluster and run configs, and in the RayJob's entrypoint script."""
    found = []
    for doc in DOCS:
        found += [(doc.relative_to(ROOT).as_posix(), c) for _, c in doc_commands(doc)]
    for path in [
        *sorted((ROOT / "cluster").glob("*.yaml")),
        *sorted((ROOT / "configs").glob("*.yaml")),
    ]:
        text = path.read_text(encoding="utf-8")
        found += [
            (path.name, line.lstrip("# "))
            for line in text.splitlines()
            if line.lstrip().startswith("#") and "python -m job" in line
        ]
        doc = yaml.safe_load(text)
        if isinstance(doc, dict) and doc.get("kind") == "RayJob":
            script = shlex.split(doc["spec"]["entrypoint"])[2]
            found += [(path.name, c) for c in script.replace("\n", " ").split(";")]
    out = []
    for where, cmd in found:
        if "python -m job" not in cmd:
            continue
        cmd = cmd.split("| tee")[0]
        words = shlex.split(cmd.split("python -m job", 1)[1])
        out.append((where, words))
    return out


def _set_pairs(words: list[str]) -> list[str]:
    pairs, on = [], False
    for w in words:
        if w == "--set":
            on = True
        elif w.startswith("--"):
            on = False
        elif on:
            pairs.append(w)
    return pairs


def test_every_set_in_the_docs_and_manifests_parses():
    """Each `--set` a reader copies (README.md, cluster/README.md, the RayJob, comments in the
    configs) is a key the config models know, with a value they accept. Shell variables stay as
    text ($BUCKET), as a placeholder would."""
    checked = 0
    for where, words in _job_commands():
        pairs = _set_pairs(words)
        if not pairs:
            continue
        config = words[words.index("--config") + 1] if "--config" in words else None
        cfg = load_config(ROOT / config if config else None, pairs)
        checked += 1
        for pair in pairs:
            key = pair.split("=", 1)[0]
            if key.startswith("data.") and "{" in pair:
                assert isinstance(getattr(cfg.data, key.split(".")[1]), ParallelFiles), (
                    where,
                    pair,
                )
    assert checked >= 4


# ----------------------------------------------------------------------------- WMT14 data


def _tar(path: Path, members: dict[str, bytes], gz: bool) -> None:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _lines(prefix: str, n: int) -> bytes:
    return "".join(f"{prefix} {i}\n" for i in range(n)).encode()


def _sgm(lang: str, sents: list[str]) -> bytes:
    segs = "".join(f'<seg id="{i + 1}">{s}</seg>\n' for i, s in enumerate(sents))
    return (
        f'<refset setid="newstest2014" srclang="any" trglang="{lang}">\n'
        f'<doc sysid="ref" docid="1" genre="news" origlang="en">\n<p>\n{segs}</p>\n</doc>\n'
        "</refset>\n"
    ).encode()


def miniature_wmt14(orig: Path, misaligned: str | None = None) -> dict[str, int]:
    """The seven archives of WMT14 en-fr with the layout the published ones have, a few lines
    each; returns the pairs per training corpus, in the order they are concatenated."""
    orig.mkdir(parents=True)
    corpora = {
        "training-parallel-europarl-v7.tgz": ("training/europarl-v7.fr-en", 5),
        "training-parallel-commoncrawl.tgz": ("commoncrawl.fr-en", 4),
        "training-parallel-un.tgz": ("un/undoc.2000.fr-en", 3),
        "training-parallel-nc-v9.tgz": ("training/news-commentary-v9.fr-en", 2),
    }
    sizes = {}
    for archive, (corpus, n) in corpora.items():
        fr = n - 1 if corpus == misaligned else n
        _tar(
            orig / archive,
            {f"{corpus}.en": _lines(f"en {corpus}", n), f"{corpus}.fr": _lines(f"fr {corpus}", fr)},
            gz=True,
        )
        sizes[corpus] = n
    giga = "giga-fren.release2.fixed"
    _tar(
        orig / "training-giga-fren.tar",
        {
            f"{giga}.en.gz": gzip.compress(_lines(f"en {giga}", 6)),
            f"{giga}.fr.gz": gzip.compress(_lines(f"fr {giga}", 6)),
        },
        gz=False,
    )
    sizes[giga] = 6
    _tar(
        orig / "dev.tgz",
        {
            "dev/newstest2013.en": _lines("valid en", 3),
            "dev/newstest2013.fr": _lines("valid fr", 3),
        },
        gz=True,
    )
    _tar(
        orig / "test-full.tgz",
        {
            "test-full/newstest2014-fren-src.en.sgm": _sgm(
                "en", ["A first  sentence. ", "«Quoted» & more"]
            ),
            "test-full/newstest2014-fren-ref.fr.sgm": _sgm(
                "fr", ["Une première phrase.", "« Cité » & plus"]
            ),
        },
        gz=True,
    )
    return sizes


def convert(cwd: Path, out: str) -> subprocess.CompletedProcess:
    """`bash cluster/wmt14-en-fr.sh OUT`, run in `cwd`."""
    return subprocess.run(
        ["bash", str(WMT14), out], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _walkthrough_conversion() -> list[str]:
    """The README's conversion command, as argv: bash cluster/wmt14-en-fr.sh OUT."""
    cmds = [
        c for _, c in doc_commands(CLUSTER_README) if c.startswith("bash cluster/wmt14-en-fr.sh ")
    ]
    assert len(cmds) == 1, cmds
    return shlex.split(cmds[0])


def test_wmt14_conversion_runs_on_a_miniature_of_the_archives(tmp_path):
    argv = _walkthrough_conversion()
    out = tmp_path / argv[2]
    sizes = miniature_wmt14(out / "orig")
    proc = convert(tmp_path, argv[2])
    assert proc.returncode == 0, proc.stderr
    train_en = (out / "train.en").read_text(encoding="utf-8").splitlines()
    train_fr = (out / "train.fr").read_text(encoding="utf-8").splitlines()
    assert len(train_en) == len(train_fr) == sum(sizes.values())
    expected = [f"{corpus} {i}" for corpus, n in sizes.items() for i in range(n)]
    assert train_en == [f"en {e}" for e in expected] and train_fr == [f"fr {e}" for e in expected]
    assert (out / "valid.en").read_text(encoding="utf-8").splitlines() == [
        "valid en 0",
        "valid en 1",
        "valid en 2",
    ]
    assert (out / "test.en").read_text(encoding="utf-8").splitlines() == [
        "A first  sentence.",
        "«Quoted» & more",
    ]
    assert (out / "test.fr").read_text(encoding="utf-8").splitlines() == [
        "Une première phrase.",
        "« Cité » & plus",
    ]
    assert f"{argv[2]}/train.en + {argv[2]}/train.fr: {sum(sizes.values())} pairs" in proc.stdout
    # what data.train/valid/test then read: the job's own corpus check on the driver
    for split, n in (("train", sum(sizes.values())), ("valid", 3), ("test", 2)):
        pair = ParallelFiles(source=str(out / f"{split}.en"), target=str(out / f"{split}.fr"))
        assert open_corpus(pair, ["source", "target"]).count_rows() == n
    again = convert(tmp_path, argv[2])
    assert again.returncode == 0 and "downloading" not in again.stdout  # archives kept, not fetched
    assert (out / "train.en").read_text(encoding="utf-8").splitlines() == train_en


def test_wmt14_conversion_names_a_misaligned_corpus(tmp_path):
    miniature_wmt14(tmp_path / "out" / "orig", misaligned="commoncrawl.fr-en")
    proc = convert(tmp_path, "out")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: out/orig/commoncrawl.fr-en: 4 English lines but 3 French lines"
    )
