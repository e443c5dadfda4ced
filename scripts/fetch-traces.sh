#!/usr/bin/env sh
# Downloads the published traces MIXED-SERVICES replays (see extproc/src/bench/mixed-services.ts
# for what each is and its licence) into DIR (default: traces/). They are not committed.
set -eu
dir=${1:-traces}
mkdir -p "$dir"
fetch() {
  [ -s "$dir/$2" ] && { echo "have $dir/$2"; return; }
  echo "downloading $dir/$2"
  curl -fsSL --retry 3 -o "$dir/$2.part" "$1" && mv "$dir/$2.part" "$dir/$2"
}
fetch https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/AzureLLMInferenceTrace_conv.csv AzureLLMInferenceTrace_conv.csv
fetch https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/AzureLLMInferenceTrace_code.csv AzureLLMInferenceTrace_code.csv
fetch https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/traces/conversation_trace.jsonl conversation_trace.jsonl
