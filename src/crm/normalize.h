/*
 * normalize.h: phone numbers as they arrive from SIP, turned into E.164
 * ("+79161234567") for CRM lookups and events. Pure code: libc only.
 */
#ifndef SIPCRM_CRM_NORMALIZE_H
#define SIPCRM_CRM_NORMALIZE_H

#include <stddef.h>

/* Enough for any result: '+', 15 digits, NUL. */
#define CRM_E164_SIZE 17

/*
 * Normalises a phone number to E.164 ("+79161234567") using country_code
 * (digits, e.g. "7"; may be NULL/"" for none). Returns 0 and writes out,
 * or returns EINVAL when in holds no usable number (then out holds the
 * digits found, possibly "", so callers can still pass something on), or
 * ENOSPC if out is too small for what it should hold (then out is "";
 * with no room at all, out is untouched). out is always NUL-terminated
 * when outsz > 0, and nothing is written past out[outsz - 1]. in and
 * out must not overlap. Reentrant: no state, no allocation, no locale.
 *
 * 1. Where the number is. Leading white space is skipped. A leading
 *    quoted display name ("Ivan \"2\"") is skipped, never read. If a '<'
 *    follows, only the text between '<' and '>' is used (name-addr).
 *    Then, case-insensitively:
 *    - "sip:" / "sips:": the user part, i.e. up to '@' and before any
 *      ':' (password). A SIP URI without '@' has no number.
 *    - "tel:": the rest.
 *    - anything else is a bare number; text from an '@' on is dropped.
 *    %XX escapes are decoded ("%2B7916..."). The number ends at the first
 *    ';' (URI parameters). Of the parameters only phone-context is used.
 *
 * 2. Characters of the number. Digits. One '+', before the first digit
 *    ("(+49) 30 ..." is fine; "++7", "7+9" are not). Visual separators,
 *    ignored: space, tab, CR, LF, - . ( ) /, NBSP (0xA0 and UTF-8
 *    C2 A0), and the UTF-8 spaces, hyphens and dashes U+2000-U+200B,
 *    U+2010-U+2015, U+202F, U+2060, U+2212, U+FEFF. "(0)" after the first
 *    digit is the trunk prefix shown in international numbers and is
 *    dropped: "+49 (0)30 1234567" -> "+49301234567". An extension marker
 *    ends the number, and nothing after it is read: ';', ',', '#', 'x',
 *    'X', "ext" in any case ("ext.", "extn", "ext="), and Russian "доб"
 *    or "Доб". Any other byte (letters, '*', quotes, control bytes)
 *    makes the number unusable: "+7916abc1234567" and "1-800-FLOWERS"
 *    are EINVAL, with out = the digits ("79161234567", "1800").
 *
 * 3. International forms (need no country_code):
 *    - a leading '+': the digits are the E.164 number;
 *    - no '+' but a parameter phone-context=+DIGITS (RFC 3966): those
 *      digits, then the number's ("tel:1234567;phone-context=+7-495");
 *      a phone-context that is a domain name is ignored;
 *    - an international prefix: "00" for every country, and also "810"
 *      for 7 (Russia/Kazakhstan) and 375 (Belarus), "011" for 1 (NANP),
 *      "0011" for 61 (Australia), "010" for 81 (Japan); it is dropped.
 *
 * 4. National forms, with country_code (1-3 digits, not starting with 0;
 *    an optional leading '+' is allowed; anything else counts as none):
 *    - 7 and 1 have 10-digit national numbers: 10 digits get the code
 *      ("9161234567" -> "+79161234567"); 11 digits that start with the
 *      trunk prefix (8 for 7, 1 for 1) or with the country code lose it
 *      and get the code ("89161234567", "79161234567", "12125550100");
 *      every other length is EINVAL.
 *    - other countries: a national number of fewer than 7 digits (trunk
 *      prefix included) is EINVAL: extensions ("101") and service
 *      numbers ("112") are not normalised. A leading trunk prefix is
 *      dropped ("0" by default; "06" for 36, "80" for 375, none for 39,
 *      where the 0 belongs to the number) and the code is prepended
 *      ("030 1234567" with 49 -> "+49301234567"). No attempt is made to
 *      tell an international number written without '+' or "00" from a
 *      national one.
 *    - no country_code: only the international forms succeed.
 *
 * 5. The result is checked: 8 to 15 digits, the first not 0; zone 7 and
 *    zone 1 numbers must have 11 digits, with a national part not
 *    starting with 0 (zone 7) or 0 or 1 (zone 1). Otherwise EINVAL.
 *    On success out is '+' followed by 8-15 digits.
 *
 * On EINVAL, "the digits found" are the digits of the number part in
 * the order given (prefixes included, phone-context and extension not):
 * "8-916" -> "8916", "anonymous" -> "", "sip:101@pbx" -> "101".
 */
int crm_normalize(const char *in, const char *country_code, char *out,
		  size_t outsz);

#endif
