#!/usr/bin/env bash
# WMT14 English->French from its published files into the line-aligned text files that
# data.train / data.valid / data.test read ({source: x.en, target: x.fr}); nothing else is
# changed (no tokenisation, no filtering: the job counts and sets aside what it cannot use).
#
#   bash cluster/wmt14-en-fr.sh DIR
#
# Downloads the archives into DIR/orig (skips any already there; several GB in all), then writes
#   DIR/train.en DIR/train.fr   Europarl v7, Common Crawl, UN, News Commentary v9, 10^9 fr-en
#   DIR/valid.en DIR/valid.fr   newstest2013 (from dev.tgz)
#   DIR/test.en  DIR/test.fr    newstest2014, the full fr-en set (from the SGML of test-full.tgz)
# The training corpora and test set are the ones fairseq's examples/translation/
# prepare-wmt14en2fr.sh takes, from the same URLs. The training files stay uncompressed so that
# every CPU of the cluster parses its own piece of them (a .gz file is read by one task).
set -euo pipefail

out=${1:?usage: $0 OUTPUT_DIR}
orig="$out/orig"
mkdir -p "$orig"

ARCHIVES=(
  "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz"
  "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz"
  "http://statmt.org/wmt13/training-parallel-un.tgz"
  "http://statmt.org/wmt14/training-parallel-nc-v9.tgz"
  "http://statmt.org/wmt10/training-giga-fren.tar"
  "http://statmt.org/wmt14/dev.tgz"
  "http://statmt.org/wmt14/test-full.tgz"
)
# Each corpus: the path of its two sides inside DIR/orig, without the .en / .fr ending.
CORPORA=(
  "training/europarl-v7.fr-en"
  "commoncrawl.fr-en"
  "un/undoc.2000.fr-en"
  "training/news-commentary-v9.fr-en"
  "giga-fren.release2.fixed"
)

for url in "${ARCHIVES[@]}"; do
  file="$orig/${url##*/}"
  if [ ! -s "$file" ]; then
    echo "downloading $url"
    curl -fL --retry 3 -o "$file.part" "$url"
    mv "$file.part" "$file"
  fi
  tar -xf "$file" -C "$orig"          # GNU tar detects the gzip of a .tgz by itself
done

# One side of a corpus to stdout (the 10^9 corpus ships its sides gzipped inside the tar).
side() {
  if [ -f "$1.gz" ]; then gzip -dc "$1.gz"; else cat "$1"; fi
}

: > "$out/train.en"
: > "$out/train.fr"
for corpus in "${CORPORA[@]}"; do
  en=$(side "$orig/$corpus.en" | wc -l)
  fr=$(side "$orig/$corpus.fr" | wc -l)
  if [ "$en" != "$fr" ]; then
    echo "error: $orig/$corpus: $en English lines but $fr French lines" >&2
    exit 1
  fi
  side "$orig/$corpus.en" >> "$out/train.en"
  side "$orig/$corpus.fr" >> "$out/train.fr"
  echo "$corpus: $en pairs"
done

cp "$orig/dev/newstest2013.en" "$out/valid.en"
cp "$orig/dev/newstest2013.fr" "$out/valid.fr"

# SGML to one sentence per line: the text of each <seg id="N">...</seg>.
segments() {
  sed -n 's/^.*<seg id="[0-9]*">[[:space:]]*\(.*\)<\/seg>.*$/\1/p' "$1" | sed 's/[[:space:]]*$//'
}
segments "$orig/test-full/newstest2014-fren-src.en.sgm" > "$out/test.en"
segments "$orig/test-full/newstest2014-fren-ref.fr.sgm" > "$out/test.fr"

for split in train valid test; do
  en=$(wc -l < "$out/$split.en")
  fr=$(wc -l < "$out/$split.fr")
  if [ "$en" != "$fr" ]; then
    echo "error: $out/$split: $en English lines but $fr French lines" >&2
    exit 1
  fi
  echo "$out/$split.en + $out/$split.fr: $en pairs"
done
