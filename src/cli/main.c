/* gdn2 command-line entry point: dispatches to src/cli/cmd_<name>.c */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command commands[] = {
    {"demo", cmd_demo, "small end-to-end demo on the CPU (the main job)"},
    {"op", cmd_op, "run the GDN-2 kernels on tensors from a safetensors file"},
    {"layer", cmd_layer, "official GatedDeltaNet2 layer forward/backward from a safetensors file"},
    {"forward", cmd_forward, "official lit_gpt model forward and loss from a safetensors file"},
    {"train", cmd_train, "train a model on a text file, token shards or a synthetic task"},
    {"tokens", cmd_tokens, "make token shards from a text (llm.c's .bin format) and inspect them"},
    {"generate", cmd_generate, "generate text from a checkpoint (constant memory)"},
    {"serve", cmd_serve, "OpenAI-style completions server with continuous batching"},
    {"task", cmd_task, "show samples of the task generators"},
    {"eval", cmd_eval, "evaluate a checkpoint on tasks"},
    {"quantize", cmd_quant, "int8/int4 weight quantization of a checkpoint with its measured accuracy cost"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: gdn2 <command> [options]   (gdn2 <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\noptions take their value as '--name VALUE' or '--name=VALUE'; every value is checked against the\n"
               "option's range (integers may be written 1e8; --threads: 0 = OpenMP default, at most 4 x the online\n"
               "CPUs, 1024 at most) and requests that cannot fit in physical memory are refused before any work.\n"
               "Exit status: 0 ok, 2 bad usage or input, 1 runtime failure (a failed write is 1).\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "gdn2: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
