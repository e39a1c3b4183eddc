/**
 * Validation errors name what the user typed and the rule, not the JSON path and the regular
 * expression (issue 16 item 5).
 */
import { describe, expect, it } from 'vitest';
import { validationMessage } from '../../server/src/http/validation-words.js';

const ID = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
const RULE = "letters, digits, '.', '_' and '-', 1 to 64, starting with a letter or digit";
const pattern = (instancePath: string, p = ID) => [{ instancePath, keyword: 'pattern', params: { pattern: p } }];

describe('validationMessage', () => {
  it('names a device id in a body array', () => {
    const m = validationMessage('body/deviceIds/1 must match pattern', pattern('/deviceIds/1'), 'body', {
      body: { deviceIds: ['ok-1', 'a b'] },
    });
    expect(m).toBe(`device id "a b" is not valid: ${RULE}`);
  });

  it('names a device id in the path', () => {
    const m = validationMessage('params/id must match pattern', pattern('/id'), 'params', { params: { id: 'x/y' } });
    expect(m).toBe(`device id "x/y" is not valid: ${RULE}`);
  });

  it('names service and operator names, and the shorter batch prefix', () => {
    expect(validationMessage('x', pattern('/name'), 'body', { body: { name: '-svc' } })).toBe(
      `name "-svc" is not valid: ${RULE}`,
    );
    expect(
      validationMessage('x', pattern('/prefix', '^[A-Za-z0-9][A-Za-z0-9._-]{0,58}$'), 'body', {
        body: { prefix: 'a b' },
      }),
    ).toBe(
      `device id prefix "a b" is not valid: letters, digits, '.', '_' and '-', 1 to 59, starting with a letter or digit`,
    );
  });

  it('does not echo a value that is not a string', () => {
    expect(validationMessage('x', pattern('/id'), 'params', {})).toBe(`device id is not valid: ${RULE}`);
  });

  it('leaves other validation errors as they are', () => {
    const other = [{ instancePath: '/count', keyword: 'maximum', params: { limit: 10000 } }];
    expect(validationMessage('body/count must be <= 10000', other, 'body', { body: { count: 99999 } })).toBe(
      'body/count must be <= 10000',
    );
    expect(validationMessage('fallback', undefined, 'body', {})).toBe('fallback');
  });
});
