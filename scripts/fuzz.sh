#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets in fuzz/ (separate package: they link only with -sanitize=fuzzer) and runs
# each for FUZZ_SECONDS (default 300), from the seeds in fuzz/Corpus/<target> plus what earlier runs found
# (.build/fuzz-corpus/<target>, kept between runs). A find is written to fuzz/crash-<hash> and the run fails;
# replay one with: fuzz/.build/release/<target> fuzz/crash-<hash>
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-300}"
# The build plan of a path dependency is not redone when files are added to it: plan again every time.
rm -f .build/release.yaml
# lld: the gold linker Debian ships fails on the fuzzer runtime's debug info.
swift build -c release --sanitize=fuzzer -Xswiftc -use-ld=lld
for target in HTTP1RequestParserFuzz HTTP1ResponseParserFuzz HTTP2FramingFuzz HPACKDecoderFuzz; do
    found="../.build/fuzz-corpus/$target"
    mkdir -p "$found"
    # Swift's own crash reporter would take the signal before libFuzzer could save the input.
    SWIFT_BACKTRACE=enable=no ".build/release/$target" "$found" "Corpus/$target" \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
