"""`python -m stack` is `python -m stack.host`: the local Functions host and its event bridge."""

from stack.host import main

main()
