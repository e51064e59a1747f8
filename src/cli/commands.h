/* The gdn2 CLI's subcommands; one file per command (src/cli/cmd_<name>.c). Each returns the
 * process exit code (0 ok, 1 runtime failure, 2 bad usage / bad input). */
#ifndef GDN2_CLI_COMMANDS_H
#define GDN2_CLI_COMMANDS_H

#include "args.h" /* the one argument parser and the pre-flight checks every command uses */

int cmd_op(int argc, char **argv);       /* run the kernels on tensors from a safetensors file  */
int cmd_layer(int argc, char **argv);    /* official GatedDeltaNet2 layer fwd/bwd from a file    */
int cmd_forward(int argc, char **argv);  /* official lit_gpt model forward + loss from a file    */
int cmd_train(int argc, char **argv);    /* train a model (text or synthetic task)               */
int cmd_generate(int argc, char **argv); /* constant-memory generation from a checkpoint         */
int cmd_demo(int argc, char **argv);     /* the main job: small end-to-end CPU demo              */
int cmd_task(int argc, char **argv);     /* inspect task generators                              */
int cmd_eval(int argc, char **argv);     /* evaluate a checkpoint on tasks                       */
int cmd_tokens(int argc, char **argv);   /* make and inspect llm.c token shards                  */
int cmd_quant(int argc, char **argv);    /* int8/int4 weight quantization and its accuracy cost  */
int cmd_serve(int argc, char **argv);    /* OpenAI-style completions server (libmicrohttpd)     */


/* src/cli/data_files.c: 1 (after "gdn2 CMD: ..." on stderr naming the file, how to get it and FLAG)
 * when path is the default text GDN2_DEFAULT_TEXT and cannot be opened; 0 otherwise (the caller
 * exits 2 on 1). */
int cli_default_text_missing(const char *cmd, const char *path, const char *flag);

/* src/cli/blas.c: one OpenBLAS thread (unless OPENBLAS_NUM_THREADS is set), for the commands that
 * train or measure a model: parallelism comes from OpenMP. */
void cli_blas_one_thread(void);

#endif
