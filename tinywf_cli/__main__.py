"""``python -m tinywf_cli``: the same as the ``tinywf`` command."""

from tinywf_cli.cli import main

if __name__ == "__main__":
    main()
