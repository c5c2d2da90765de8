/*
 * main.c - the `distill` program's entry point.  The subcommands and their
 * dispatch are in commands.c, so that the command-line parser can be
 * linked without main() (tests/fuzz/fuzz_cli_args.c does).
 */
#include "cli.h"

int main(int argc, char **argv)
{
    return cli_main(argc, argv);
}
