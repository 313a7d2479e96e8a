"""The subcommands. Each module here with a `register(subparsers)` function adds its commands to
`camrec` (cli.build_parser discovers them); `ORDER` sorts them in --help.
The top of the tree: may import every package; nothing in camrec imports it but cli."""
