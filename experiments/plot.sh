#!/bin/sh
# SVG bar chart of the study results (docs/reports/STUDY.md): one group of bars per (task, test length), one
# bar per mixer setting = mean score over seeds, one dot per seed. No dependencies beyond jq and awk.
#   experiments/plot.sh OUT.svg RUNS.jsonl [RUNS.jsonl ...]
set -eu
[ $# -ge 2 ] || { echo "usage: experiments/plot.sh OUT.svg RUNS.jsonl [RUNS.jsonl ...]" >&2; exit 2; }
svg=$1; shift
for f in "$@"; do [ -r "$f" ] || { echo "plot.sh: cannot read '$f'" >&2; exit 1; }; done
tmp="$svg.tmp.$$"
jq -r '. as $r | .eval[] | [$r.task + " L=" + (.length|tostring),
       $r.mixer + (if $r.neg_eig == 1 then "+neg" else "" end), (.score|tostring)] | @tsv' "$@" |
awk -F '\t' '
{ g = $1; b = $2; k = g SUBSEP b;
  if (!(g in gs)) { gs[g] = 1; gorder[++ng] = g }
  if (!(k in bs)) { bs[k] = 1; nb[g]++; border[g, nb[g]] = b }
  n[k]++; s[k] += $3; v[k, n[k]] = $3 }
END {
  # layout: bars of width bw, groups separated by a gap; y axis 0..100 %
  bw = 26; gap = 30; left = 50; top = 30; h = 220; x = left;
  for (i = 1; i <= ng; i++) x += nb[gorder[i]] * bw + gap;
  W = x + 10; H = top + h + 110;
  printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"10\">\n", W, H;
  printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n";
  printf "<text x=\"%d\" y=\"16\" font-size=\"12\">test accuracy %% (bar = mean over seeds, dots = seeds)</text>\n", left;
  for (t = 0; t <= 100; t += 25) { y = top + h - h * t / 100;
    printf "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n",
      left, W - 10, y, y, left - 4, y + 3, t }
  col["gdn"] = "#999999"; col["kda"] = "#4c78a8"; col["gdn2"] = "#e45756"; col["attn"] = "#54a24b";
  col["gdn2+neg"] = "#b22222"; col["kda+neg"] = "#2a4d75"; col["gdn+neg"] = "#555555";
  x = left;
  for (i = 1; i <= ng; i++) { g = gorder[i]; x0 = x;
    for (j = 1; j <= nb[g]; j++) { b = border[g, j]; k = g SUBSEP b; m = s[k] / n[k];
      c = (b in col) ? col[b] : "#888888"; y = top + h - h * m / 100;
      printf "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"><title>%s %s: %.1f (n=%d)</title></rect>\n",
        x + 2, y, bw - 4, top + h - y, c, g, b, m, n[k];
      for (r = 1; r <= n[k]; r++)
        printf "<circle cx=\"%d\" cy=\"%.1f\" r=\"2.5\" fill=\"black\"/>\n", x + bw / 2, top + h - h * v[k, r] / 100;
      printf "<text transform=\"translate(%d,%d) rotate(60)\">%s</text>\n", x + bw / 2 - 3, top + h + 6, b;
      x += bw }
    printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n", (x0 + x) / 2, top + h + 80, g;
    x += gap }
  printf "</svg>\n" }' > "$tmp"
mv "$tmp" "$svg"
