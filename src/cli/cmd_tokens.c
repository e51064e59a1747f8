/* gdn2 tokens — make and inspect llm.c token shards (include/gdn2_tokens.h, docs/FORMATS.md).
 *   gdn2 tokens --from-text FILE --out PREFIX [--shard-tokens N] [--u32]
 *   gdn2 tokens --info PATTERN [--val-data PATTERN] [--vocab N] */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"
#include "gdn2_tokens.h"

static void tokens_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 tokens --from-text FILE --out PREFIX [--shard-tokens N] [--u32]\n"
            "       gdn2 tokens --info PATTERN [--val-data PATTERN] [--vocab N]\n"
            "\n"
            "Token shards in llm.c's format (a 256 x int32 header: magic 20240520, version, token count; then\n"
            "the tokens), the input of `gdn2 train --task tokens`.\n"
            "  --from-text FILE    write FILE's bytes as token ids (vocab 256), streamed, to PREFIX_000000.bin,\n"
            "                      PREFIX_000001.bin, ... (each written to a temporary name and renamed)\n"
            "  --out PREFIX        the shards' path prefix\n"
            "  --shard-tokens N    tokens per shard (1e8, as llm.c; at most 2^31-1); the last may be shorter\n"
            "  --u32               uint32 tokens (version 2, gdn2's extension) instead of uint16 (version 1)\n"
            "  --info PATTERN      list the shards of a glob pattern or comma list with their versions and token\n"
            "                      counts, and the train / validation split `gdn2 train` would use\n"
            "  --val-data PATTERN  with --info: the validation shards\n"
            "  --vocab N           with --info: check every token id against N (reads every shard)\n"
            "Exit status: 0 ok, 2 bad usage or input, 1 runtime failure (a failed write is 1).\n");
}

int cmd_tokens(int argc, char **argv) {
    const char *text = NULL, *out = NULL, *info = NULL, *val = NULL;
    int64_t shard_tokens = 100000000, vocab = 0;
    int u32 = 0;
    const cli_opt opts[] = {
        CLI_OPT_STR("--from-text", NULL, &text),
        CLI_OPT_STR("--out", "-o", &out),
        CLI_OPT_I64("--shard-tokens", &shard_tokens, 1, GDN2_TOK_MAX_SHARD_TOKENS),
        CLI_OPT_FLAG("--u32", &u32),
        CLI_OPT_STR("--info", NULL, &info),
        CLI_OPT_STR("--val-data", NULL, &val),
        CLI_OPT_I64("--vocab", &vocab, 1, 1LL << 32),
    };
    int rc = cli_parse("tokens", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL, tokens_usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!!text == !!info) {
        fprintf(stderr, "gdn2 tokens: give one of --from-text FILE (with --out PREFIX) or --info PATTERN\n");
        tokens_usage(stderr);
        return 2;
    }
    if (text) {
        if (!out) {
            fprintf(stderr, "gdn2 tokens: --from-text needs --out PREFIX\n");
            return 2;
        }
        if (val || vocab) {
            fprintf(stderr, "gdn2 tokens: --val-data and --vocab go with --info\n");
            return 2;
        }
        if ((rc = cli_check_in("tokens", "--from-text", text))) return rc;
        char probe[4200];
        snprintf(probe, sizeof probe, "%s_000000.bin", out);
        if ((rc = cli_check_out("tokens", "--out", probe))) return rc;
        int64_t ns = 0, nt = 0;
        int st = gdn2_tokens_from_text(text, out, shard_tokens, u32 ? GDN2_TOK_V_U32 : GDN2_TOK_V_U16, &ns, &nt);
        if (st) {
            fprintf(stderr, "gdn2 tokens: %s\n", gdn2_last_error());
            return st == GDN2_ERR_IO && ns > 0 ? 1 : cli_exit_code(st);
        }
        printf("gdn2 tokens: %lld tokens (bytes of %s, vocab 256) in %lld uint%d shard%s %s_000000.bin%s\n", (long long)nt,
               text, (long long)ns, u32 ? 32 : 16, ns == 1 ? "" : "s", out, ns > 1 ? " ..." : "");
        return 0;
    }
    if (out || u32) {
        fprintf(stderr, "gdn2 tokens: --out and --u32 go with --from-text\n");
        return 2;
    }
    gdn2_tokens_cfg c = {vocab, 0, 0};
    gdn2_tokens *d = NULL;
    int st = gdn2_tokens_open(info, val, &c, &d);
    if (!st) st = gdn2_tokens_scan(d);
    if (st) {
        fprintf(stderr, "gdn2 tokens: %s\n", gdn2_last_error());
        gdn2_tokens_close(d);
        return cli_exit_code(st);
    }
    for (int split = 0; split < 2; split++) {
        char id[128];
        printf("%s: %lld shard%s, %lld tokens\n", split ? "validation" : "train", (long long)gdn2_tokens_n_shards(d, split),
               gdn2_tokens_n_shards(d, split) == 1 ? "" : "s", (long long)gdn2_tokens_n_tokens(d, split));
        for (int64_t i = 0; i < gdn2_tokens_n_shards(d, split); i++) printf("  %s\n", gdn2_tokens_shard_path(d, split, i));
        if (split == 0 || val) {
            gdn2_tokens_identity(d, split, id, sizeof id);
            printf("  files: %s\n", id);
        }
    }
    if (vocab) printf("every token id is below %lld\n", (long long)vocab);
    gdn2_tokens_close(d);
    return 0;
}
