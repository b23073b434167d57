/* Entry points of the subcommands: argv[0] is the subcommand name; returns the exit code. */
#ifndef SL_TOOLS_COMMANDS_H
#define SL_TOOLS_COMMANDS_H

int cmd_inspect(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_dump_qk(int argc, char **argv);
int cmd_train_hash(int argc, char **argv);
int cmd_eval_retrieval(int argc, char **argv);
int cmd_summarize(int argc, char **argv);
int cmd_tune(int argc, char **argv);

#endif
