#!/usr/bin/env bash
# html_report.sh ONNX_PRUNE SHARED_MODELS: the visual report (--html, issue 12) rendered by a real headless
# browser (Debian's chromium): the DOM it builds has one head cell per head of every layer, as many kept
# cells as the report keeps, the FFN widths kept, a score histogram per block, "not measured" where the
# report has no reconstruction errors, and the search curve's points; the page needs no network or script.
set -u
BIN=$1 SHARED=$2
. "$(dirname "$0")/lib.sh"
M=$SHARED/austen_bert/model.onnx D=$SHARED/austen_bert/dev.npz
for f in "$M" "$D"; do [ -f "$f" ] || { echo "FAIL missing fixture $f"; exit 1; }; done
CHROMIUM=$(command -v chromium || command -v chromium-browser) || { echo "FAIL chromium is not installed (scripts/bootstrap.sh installs it)"; exit 1; }

# render PAGE OUT: the DOM chromium builds from the page, and a screenshot beside it
render() {
  local profile
  profile=$(mktemp -d -p "$work")
  timeout -k 5 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" --dump-dom "file://$1" \
    >"$2" 2>"$work/chromium.log" || { cat "$work/chromium.log"; return 1; }
  timeout -k 5 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" --window-size=1000,1400 \
    --screenshot="$2.png" "file://$1" >/dev/null 2>&1 || return 1
}

# check NAME: the rendered DOM against the JSON report
check() {
  $PY - "$work/$1.json" "$work/$1.dom" "$work/$1.html" <<'PY' && ok || bad "$1: DOM"
import json, sys
from html.parser import HTMLParser
rep = json.load(open(sys.argv[1]))
page = open(sys.argv[3]).read()
assert '<script' not in page and 'http://' not in page and 'https://' not in page and ' src=' not in page, 'not self-contained'

class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.heads, self.kept, self.ffn, self.hist, self.points, self.svg = {}, {}, {}, 0, 0, None
        self.text = []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get('class', '').split()
        if tag == 'svg':
            self.svg = a
            if 'ffn' in cls: self.ffn[int(a['data-layer'])] = int(a['data-after'])
            if 'hist' in cls: self.hist += 1
        if tag == 'rect' and 'head' in cls:
            l = int(self.svg['data-layer'])
            self.heads[l] = self.heads.get(l, 0) + 1
            self.kept[l] = self.kept.get(l, 0) + ('kept' in cls)
        if tag == 'circle' and 'point' in cls: self.points += 1
    def handle_data(self, d): self.text.append(d)

dom = Dom()
dom.feed(open(sys.argv[2]).read())
for L in rep['layers']:
    l = L['layer']
    assert dom.heads.get(l) == L['heads_before'], (l, dom.heads, L['heads_before'])
    assert dom.kept.get(l) == L['heads_after'], (l, dom.kept, L['heads_after'])
    assert dom.ffn.get(l) == L['ffn_after'], (l, dom.ffn, L['ffn_after'])
assert dom.hist == 2 * len(rep['layers']), dom.hist
text = ' '.join(dom.text)
assert 'not measured' in text
if 'search' in rep:
    assert dom.points == len(rep['search']['curve']), (dom.points, rep['search']['curve'])
print('heads', dom.heads, 'kept', dom.kept, 'ffn', dom.ffn)
PY
}

"$BIN" prune "$M" -o "$work/ratio.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 --report "$work/ratio.json" \
  --html "$work/ratio.html" -q || bad "ratio: prune failed"
render "$work/ratio.html" "$work/ratio.dom" && check ratio || bad "ratio: chromium failed"
"$BIN" prune "$M" -o "$work/floor.onnx" --min-agreement 0.8 --importance activation --data "$D" --samples 16 \
  --eval-samples 32 --search-steps 3 --batch 16 --multiple-of 32 --report "$work/floor.json" --html "$work/floor.html" -q ||
  bad "floor: prune failed"
render "$work/floor.html" "$work/floor.dom" && check floor || bad "floor: chromium failed"
[ -s "$work/floor.dom.png" ] && ok || bad "no screenshot"
[ -n "${HTML_REPORT_KEEP:-}" ] && cp "$work/floor.html" "$work/floor.dom.png" "$HTML_REPORT_KEEP/"
# the page is an output like any other: never over an input
expect html-over-input "refusing to overwrite" -- prune "$M" -o "$work/out/x.onnx" --head-sparsity 0.5 --html "$M"
expect html-dry-run "--html and --dry-run contradict" -- prune "$M" --dry-run --head-sparsity 0.5 --html "$work/out/x.html"
finish
