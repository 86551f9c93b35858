"""The commands people run: `cli` (the `segflow` entry point), `dev` (the whole stack on
embedded defaults), `testing` (`segflow test` files), `read`, `dlq`, and `embedded` (the Tansu
broker and Postgres started on free ports).

May use every other package.
"""
