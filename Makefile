# Makefile: the two commands a user needs (make test, make demo) and a few more; all logic lives in tools/make.py.
PYTHON_DRIVER ?= $(shell command -v /usr/bin/python3 || command -v python3)

.PHONY: all build test demo bench bench-quick check sanitize clean
all: build

build:
	$(PYTHON_DRIVER) tools/make.py build

test:
	$(PYTHON_DRIVER) tools/make.py test

demo:
	$(PYTHON_DRIVER) tools/make.py demo

bench:
	$(PYTHON_DRIVER) tools/make.py bench

# ASan+UBSan (doctest + Python suites on 3.11 and 3.12) and valgrind memcheck: tools/sanitize.py
sanitize:
	$(PYTHON_DRIVER) tools/make.py sanitize

clean:
	rm -rf build
