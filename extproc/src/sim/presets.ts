/**
 * Engine presets for the vLLM simulator. The two hardware presets are derived from public
 * model configs and GPU datasheets by `derivePreset` (every input carries its source), then
 * calibrated against vLLM's published benchmark numbers: see docs/benchmarks.md
 * ("Simulator calibration") and extproc/src/sim/calibration.ts, which re-runs the
 * comparison.
 */

export interface EnginePreset {
  name: string;
  /** The Hugging Face model id the preset simulates (the default served model name). */
  model: string;
  /** vLLM --max-num-seqs: most requests in the running batch. */
  maxNumSeqs: number;
  /** vLLM --max-num-batched-tokens: token budget of one scheduler step (chunked prefill). */
  maxNumBatchedTokens: number;
  /** Tokens per KV block (vLLM's default block size is 16). */
  blockSize: number;
  /** KV blocks per engine (per GPU for tensor parallelism: every rank holds its head shard). */
  numGpuBlocks: number;
  /** vLLM --max-model-len: prompt + output tokens of one request. */
  maxModelLen: number;
  /** Fixed per-step cost: scheduling, input preparation, sampling, kernel launches, TP all-reduce latency. */
  stepOverheadMs: number;
  /** Time to stream the weights from HBM once: the floor of any step (decode is memory-bound). */
  weightLoadFloorMs: number;
  /** Compute cost of one batched token (2 x params FLOPs at the achievable FLOPS). */
  perTokenMs: number;
  /** Cost of reading one token of KV context in attention. */
  attentionMsPerContextToken: number;
  /** Where every number above comes from. */
  sources: readonly string[];
  /**
   * API-server cost paid once per request before it reaches the engine (HTTP parsing,
   * tokenization, IPC to the engine core). Counts in TTFT and e2e latency, not in queue time.
   * Offline (LLM-class) scenarios run without it.
   */
  frontendOverheadMs?: number;
  /** vLLM --gpu-memory-utilization the block count was derived with (for cache_config_info). */
  gpuMemoryUtilization?: number;
  /** GPU memory the KV blocks occupy per engine, in bytes (for docs and cache_config_info). */
  kvCacheBytes?: number;
}

/** Step time of a batch, the model every preset parameterises (milliseconds). */
export function stepTimeMs(preset: EnginePreset, batchedTokens: number, contextTokens: number): number {
  if (batchedTokens <= 0) return 0;
  return (
    preset.stepOverheadMs +
    Math.max(preset.weightLoadFloorMs, batchedTokens * preset.perTokenMs) +
    preset.attentionMsPerContextToken * contextTokens
  );
}

const GiB = 1024 ** 3;

export interface GpuSpec {
  name: string;
  /** Device memory as CUDA reports it (what gpu_memory_utilization multiplies). */
  memoryBytes: number;
  /** Peak HBM bandwidth, bytes/s. */
  hbmBytesPerSecond: number;
  /** Peak dense BF16 tensor-core FLOPS (no sparsity). */
  denseBf16Flops: number;
  sources: readonly string[];
}

export interface ModelSpec {
  id: string;
  params: number;
  layers: number;
  kvHeads: number;
  headDim: number;
  /** Bytes per weight and per KV element (BF16 = 2). */
  dtypeBytes: number;
  maxPositionEmbeddings: number;
  sources: readonly string[];
}

export interface Deployment {
  tensorParallel: number;
  /** vLLM --gpu-memory-utilization. */
  gpuMemoryUtilization: number;
  /** Memory vLLM's profiling run keeps out of the KV pool: peak activations, CUDA graphs, NCCL and non-torch buffers (per GPU). */
  activationReserveBytes: number;
  blockSize: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  maxModelLen: number;
  /** Calibrated: fraction of peak HBM bandwidth the decode kernels reach. */
  hbmEfficiency: number;
  /** Calibrated: model FLOPs utilisation of the prefill/batched GEMMs. */
  mfu: number;
  /** Calibrated: fixed per-step cost (CPU scheduling, sampling, TP collectives latency). */
  stepOverheadMs: number;
  /** Calibrated: per-request API-server cost (see EnginePreset.frontendOverheadMs). */
  frontendOverheadMs: number;
  sources: readonly string[];
}

/** KV cache bytes one token occupies on one GPU: layers x kv_heads/TP x head_dim x 2 (K and V) x dtype bytes. */
export function kvBytesPerToken(model: ModelSpec, tensorParallel: number): number {
  return (model.layers * (model.kvHeads / tensorParallel) * model.headDim * 2 * model.dtypeBytes) | 0;
}

/** Builds a preset from first principles; see the field comments on EnginePreset. */
export function derivePreset(name: string, gpu: GpuSpec, model: ModelSpec, deploy: Deployment): EnginePreset {
  const tp = deploy.tensorParallel;
  const weightsPerGpu = (model.params * model.dtypeBytes) / tp;
  const kvPerToken = kvBytesPerToken(model, tp);
  const blockBytes = deploy.blockSize * kvPerToken;
  const kvCacheBytes =
    deploy.gpuMemoryUtilization * gpu.memoryBytes - weightsPerGpu - deploy.activationReserveBytes;
  const numGpuBlocks = Math.floor(kvCacheBytes / blockBytes);
  const effectiveBandwidth = gpu.hbmBytesPerSecond * deploy.hbmEfficiency;
  const maxModelLen = Math.min(
    deploy.maxModelLen,
    model.maxPositionEmbeddings,
    numGpuBlocks * deploy.blockSize,
  );
  return {
    name,
    model: model.id,
    maxNumSeqs: deploy.maxNumSeqs,
    maxNumBatchedTokens: deploy.maxNumBatchedTokens,
    blockSize: deploy.blockSize,
    numGpuBlocks,
    maxModelLen,
    stepOverheadMs: deploy.stepOverheadMs,
    weightLoadFloorMs: round((weightsPerGpu / effectiveBandwidth) * 1000),
    perTokenMs: round(((2 * model.params) / (tp * gpu.denseBf16Flops * deploy.mfu)) * 1000),
    attentionMsPerContextToken: round((kvPerToken / effectiveBandwidth) * 1000),
    frontendOverheadMs: deploy.frontendOverheadMs,
    gpuMemoryUtilization: deploy.gpuMemoryUtilization,
    kvCacheBytes: Math.floor(kvCacheBytes),
    sources: [
      `model ${model.id}: params=${model.params}, layers=${model.layers}, kv_heads=${model.kvHeads}, head_dim=${model.headDim}, ${model.dtypeBytes}-byte weights/KV`,
      ...model.sources,
      `GPU ${gpu.name}: ${(gpu.memoryBytes / GiB).toFixed(2)} GiB, ${gpu.hbmBytesPerSecond / 1e12} TB/s HBM, ${gpu.denseBf16Flops / 1e12} dense BF16 TFLOPS`,
      ...gpu.sources,
      `KV bytes/token/GPU = ${model.layers} layers x ${model.kvHeads}/${tp} kv_heads x ${model.headDim} head_dim x 2 (K,V) x ${model.dtypeBytes} B = ${kvPerToken}`,
      `numGpuBlocks = floor((${deploy.gpuMemoryUtilization} x ${(gpu.memoryBytes / GiB).toFixed(2)} GiB - ${(weightsPerGpu / GiB).toFixed(2)} GiB weights/GPU - ${(deploy.activationReserveBytes / GiB).toFixed(2)} GiB activation reserve) / (${deploy.blockSize} x ${kvPerToken} B)) = ${numGpuBlocks}`,
      `weightLoadFloorMs = ${(weightsPerGpu / 1e9).toFixed(2)} GB weights/GPU / (${gpu.hbmBytesPerSecond / 1e12} TB/s x ${deploy.hbmEfficiency} achieved)`,
      `perTokenMs = 2 x ${model.params} FLOPs / (${tp} GPUs x ${gpu.denseBf16Flops / 1e12} TFLOPS x ${deploy.mfu} MFU)`,
      `attentionMsPerContextToken = ${kvPerToken} KV bytes / (${gpu.hbmBytesPerSecond / 1e12} TB/s x ${deploy.hbmEfficiency})`,
      ...deploy.sources,
    ],
  };
}

function round(value: number): number {
  return Number(value.toPrecision(6));
}

export const H100_SXM_80GB: GpuSpec = {
  name: "NVIDIA H100 SXM5 80GB HBM3",
  // torch.cuda.mem_get_info on an H100 80GB reports 79.19 GiB total; vLLM's memory profiler
  // multiplies that by gpu_memory_utilization.
  memoryBytes: 79.19 * GiB,
  hbmBytesPerSecond: 3.35e12,
  denseBf16Flops: 989.4e12,
  sources: [
    "NVIDIA H100 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/h100/): H100 SXM 80 GB HBM3, 3.35 TB/s, 1,979 BF16 TFLOPS with sparsity = 989.4 dense",
  ],
};

export const LLAMA_3_1_8B: ModelSpec = {
  id: "meta-llama/Llama-3.1-8B-Instruct",
  params: 8.03e9,
  layers: 32,
  kvHeads: 8,
  headDim: 128,
  dtypeBytes: 2,
  maxPositionEmbeddings: 131072,
  sources: [
    "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json: num_hidden_layers=32, num_key_value_heads=8, hidden_size=4096 / num_attention_heads=32 = head_dim 128, max_position_embeddings=131072, torch_dtype=bfloat16; 8.03B parameters (model card)",
  ],
};

export const LLAMA_3_1_70B: ModelSpec = {
  id: "meta-llama/Llama-3.1-70B-Instruct",
  params: 70.6e9,
  layers: 80,
  kvHeads: 8,
  headDim: 128,
  dtypeBytes: 2,
  maxPositionEmbeddings: 131072,
  sources: [
    "https://huggingface.co/meta-llama/Llama-3.1-70B-Instruct/blob/main/config.json: num_hidden_layers=80, num_key_value_heads=8, hidden_size=8192 / num_attention_heads=64 = head_dim 128, max_position_embeddings=131072, torch_dtype=bfloat16; 70.6B parameters (model card)",
  ],
};

const VLLM_DEFAULTS_SOURCE =
  "vLLM defaults (vllm/engine/arg_utils.py get_batch_defaults, GPUs >= 70 GiB other than A100, OpenAI API server): max_num_batched_tokens=8192, max_num_seqs=1024; block_size=16 (CacheConfig.DEFAULT_BLOCK_SIZE); gpu_memory_utilization=0.9";
const CALIBRATION_SOURCE =
  "hbmEfficiency, mfu, stepOverheadMs and frontendOverheadMs calibrated against vLLM's performance dashboard (https://buildkite.com/vllm/performance-benchmark/builds/9555, 8xH100 node); comparison table in docs/benchmarks.md#simulator-calibration";

export const LLAMA_8B_H100_DEPLOYMENT: Deployment = {
  tensorParallel: 1,
  gpuMemoryUtilization: 0.9,
  activationReserveBytes: 3 * GiB,
  blockSize: 16,
  maxNumSeqs: 1024,
  maxNumBatchedTokens: 8192,
  maxModelLen: 131072,
  hbmEfficiency: 0.82,
  mfu: 0.55,
  stepOverheadMs: 2.0,
  frontendOverheadMs: 30,
  sources: [
    VLLM_DEFAULTS_SOURCE,
    "activation reserve 3 GiB: vLLM's profile run at 8192 batched tokens (activation peak ~1.2 GiB) plus CUDA graphs and non-torch memory (~1.5 GiB), as logged by vLLM's memory profiler for 8B models",
    CALIBRATION_SOURCE,
  ],
};

export const LLAMA_70B_4XH100_DEPLOYMENT: Deployment = {
  tensorParallel: 4,
  gpuMemoryUtilization: 0.9,
  activationReserveBytes: 4 * GiB,
  blockSize: 16,
  maxNumSeqs: 1024,
  maxNumBatchedTokens: 8192,
  maxModelLen: 131072,
  hbmEfficiency: 0.82,
  mfu: 0.5,
  stepOverheadMs: 6.0,
  frontendOverheadMs: 30,
  sources: [
    VLLM_DEFAULTS_SOURCE,
    "activation reserve 4 GiB/GPU: activation peak, CUDA graphs and NCCL buffers of a TP=4 engine",
    "stepOverheadMs includes 2 all-reduces per layer x 80 layers over NVLink (tensor parallelism)",
    CALIBRATION_SOURCE,
  ],
};

const TEST_PRESET: EnginePreset = {
  name: "test",
  model: "sim/test-model",
  maxNumSeqs: 4,
  maxNumBatchedTokens: 64,
  blockSize: 16,
  numGpuBlocks: 32,
  maxModelLen: 256,
  stepOverheadMs: 1,
  weightLoadFloorMs: 4,
  perTokenMs: 0.1,
  attentionMsPerContextToken: 0.001,
  frontendOverheadMs: 0,
  gpuMemoryUtilization: 0.9,
  sources: [
    "synthetic: a tiny, fast engine for unit tests and demos (512 KV tokens, 4 seqs, 64-token steps)",
  ],
};

const DEMO_PRESET: EnginePreset = {
  name: "demo",
  model: "sim/demo-model",
  maxNumSeqs: 8,
  maxNumBatchedTokens: 512,
  blockSize: 16,
  numGpuBlocks: 512,
  maxModelLen: 4096,
  stepOverheadMs: 12,
  weightLoadFloorMs: 8,
  perTokenMs: 0.04,
  attentionMsPerContextToken: 0.0005,
  frontendOverheadMs: 2,
  gpuMemoryUtilization: 0.9,
  sources: [
    "synthetic: a deliberately small engine (8 sequences, ~20 ms decode steps, ~350 output tok/s) so `make demo` saturates it with a handful of clients on a laptop",
  ],
};

export const PRESETS: Readonly<Record<string, EnginePreset>> = Object.freeze({
  "llama-3.1-8b-h100": derivePreset(
    "llama-3.1-8b-h100",
    H100_SXM_80GB,
    LLAMA_3_1_8B,
    LLAMA_8B_H100_DEPLOYMENT,
  ),
  "llama-3.1-70b-4xh100": derivePreset(
    "llama-3.1-70b-4xh100",
    H100_SXM_80GB,
    LLAMA_3_1_70B,
    LLAMA_70B_4XH100_DEPLOYMENT,
  ),
  test: TEST_PRESET,
  demo: DEMO_PRESET,
});

/** Looks a preset up by name, with a helpful error. */
export function getPreset(name: string): EnginePreset {
  const preset = PRESETS[name];
  if (!preset) throw new RangeError(`unknown preset "${name}"; known: ${Object.keys(PRESETS).join(", ")}`);
  return preset;
}
