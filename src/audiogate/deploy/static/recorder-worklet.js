// Audio worklet: forwards each block of microphone samples (mixed to mono) to the page.
class AudiogateTap extends AudioWorkletProcessor {
  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length > 0) {
      const mono = new Float32Array(channels[0].length);
      for (const ch of channels) {
        for (let i = 0; i < mono.length; i++) mono[i] += ch[i] / channels.length;
      }
      this.port.postMessage(mono, [mono.buffer]);
    }
    return true;
  }
}
registerProcessor("audiogate-tap", AudiogateTap);
