.PHONY: setup demo test clean-lab
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/meshcore demo

test: setup
	bash scripts/test.sh

clean-lab:
	.venv/bin/meshcore lab down --all
