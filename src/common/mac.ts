/**
 * Link-layer addresses as text: six hex pairs joined by ':', either case. The kernel (rtnetlink),
 * the kvstore's node entries (UnderlayMAC) and the datapath's maps all meet on this one form.
 */
const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;

export const isMac = (s: string): boolean => MAC.test(s);

/** The six bytes of a text `isMac` accepted. */
export function macBytes(s: string): Buffer {
  const b = Buffer.alloc(6);
  for (let i = 0; i < 6; i++) b[i] = parseInt(s.slice(i * 3, i * 3 + 2), 16);
  return b;
}
