#!/usr/bin/env bash
# The main job: set up, then compare the methods of recipes/suites/main.yaml on Fashion-MNIST.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
leannet suite recipes/suites/main.yaml "$@"
