"""`python -m fairsynth.cli` (also what `accelerate launch -m fairsynth.cli` runs in every process)."""

from fairsynth.cli import main

main()
