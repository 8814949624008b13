/** The typed error of an HTTP status kiln will not retry, and where HTTP source errors point. */
import { ERROR_CODES, OpError } from '../../errors.js';
import { maskUrlCredentials } from '../../llb/op-name.js';

/** Where an HTTP source's errors point (the op and its identifier field). */
export interface ErrorSite {
  readonly op: string;
  readonly field: string;
}

/** A status the server answered that retrying will not change (4xx, or one kiln cannot use). */
export class HttpStatusError extends OpError {
  /** The URL that answered (credentials masked). */
  readonly url: string;
  readonly status: number;
  constructor(options: { readonly url: URL; readonly status: number; readonly statusText: string; readonly site: ErrorSite }) {
    const url = maskUrlCredentials(options.url.href);
    super(ERROR_CODES.HTTP_SOURCE, `GET ${url}: the server answered ${options.status}${options.statusText === '' ? '' : ` ${options.statusText}`}`, options.site);
    this.name = 'HttpStatusError';
    this.url = url;
    this.status = options.status;
  }
}

