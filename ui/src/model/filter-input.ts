/** The filter bar's fields and their checks (no protobuf here: the page's bundle stays small). */
export interface UiFilters {
  /** '' = all namespaces */
  namespace: string;
  pod: string;
  label: string;
  verdict: '' | 'FORWARDED' | 'DROPPED' | 'AUDIT' | 'REDIRECTED' | 'ERROR';
  protocol: string;
  port: string;
  fqdn: string;
  httpMethod: string;
  httpStatus: string;
  node: string;
}

export const NO_FILTERS: UiFilters = { namespace: '', pod: '', label: '', verdict: '', protocol: '', port: '', fqdn: '', httpMethod: '', httpStatus: '', node: '' };

export class FilterInputError extends Error {
  readonly field: keyof UiFilters;
  constructor(field: keyof UiFilters, message: string) {
    super(message);
    this.field = field;
  }
}

/** Throws FilterInputError for a value the Observer would reject or misread. */
export function checkFilters(f: UiFilters): void {
  const port = f.port.trim();
  if (port && (!/^\d{1,5}$/.test(port) || Number(port) > 65535)) throw new FilterInputError('port', 'a port number 0-65535');
  const status = f.httpStatus.trim();
  if (status && !/^[1-5](\d\d|\d\+|\+)$/.test(status)) throw new FilterInputError('httpStatus', 'an HTTP status such as 403, 4+ or 40+');
  if (f.verdict && !['FORWARDED', 'DROPPED', 'AUDIT', 'REDIRECTED', 'ERROR'].includes(f.verdict)) throw new FilterInputError('verdict', 'a Hubble verdict');
}
