// Reads a Server-Sent Events response body into parsed events.
export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

export class SseReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = '';

  constructor(res: Response) {
    if (!res.body) throw new Error('response has no body');
    this.reader = res.body.getReader();
  }

  /** The next event, or undefined when the stream ends or `timeoutMs` passes first. */
  async next(timeoutMs = 5000): Promise<SseEvent | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const sep = this.buffer.indexOf('\n\n');
      if (sep !== -1) {
        const block = this.buffer.slice(0, sep);
        this.buffer = this.buffer.slice(sep + 2);
        const ev: SseEvent = { event: 'message', data: '' };
        for (const line of block.split('\n')) {
          const colon = line.indexOf(':');
          const field = line.slice(0, colon);
          const value = line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') ev.event = value;
          else if (field === 'data') ev.data += value;
          else if (field === 'id') ev.id = value;
        }
        return ev;
      }
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      const chunk = await Promise.race([
        this.reader.read(),
        new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), left)),
      ]);
      if (chunk === 'timeout') return undefined;
      if (chunk.done) return undefined;
      this.buffer += this.decoder.decode(chunk.value, { stream: true });
    }
  }

  async close(): Promise<void> {
    await this.reader.cancel().catch(() => undefined);
  }
}
