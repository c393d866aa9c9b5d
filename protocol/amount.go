package protocol

import (
	"strconv"
	"strings"
)

// exponents maps each active ISO 4217 currency whose minor unit is not 2 to
// its exponent. Every other code in currencies2 has exponent 2.
var exponents = map[string]int{
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
	"PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	"CLF": 4, "UYW": 4,
}

// currencies2 lists the active ISO 4217 codes with two decimals.
const currencies2 = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD " +
	"BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR " +
	"FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD " +
	"KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN " +
	"NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS " +
	"SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD " +
	"XCG YER ZAR ZMW ZWG"

func init() {
	for _, c := range strings.Fields(currencies2) {
		exponents[c] = 2
	}
}

// maxMinor bounds amounts so that sums of refunds can never overflow int64.
const maxMinor = int64(1) << 52

// Exponent returns the ISO 4217 minor-unit exponent of currency (upper case),
// and false for a code termhub does not know.
func Exponent(currency string) (int, bool) {
	e, ok := exponents[currency]
	return e, ok
}

// ParseAmount converts a decimal string such as "12.50" to minor units of
// currency exactly, without floating point. field names the JSON field in the
// error. Too many decimals, zero, negative and malformed values are refused.
func ParseAmount(s, currency, field string) (int64, *Error) {
	exp, ok := Exponent(currency)
	if !ok {
		return 0, Invalid("currency", "unknown currency %q (ISO 4217 code expected)", currency)
	}
	if s == "" {
		return 0, Invalid(field, "must be a decimal string such as \"12.50\"")
	}
	if s[0] == '-' {
		return 0, Invalid(field, "must be positive")
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || !allDigits(whole) || (hasDot && (frac == "" || !allDigits(frac))) {
		return 0, Invalid(field, "must be a decimal string such as \"12.50\"")
	}
	if len(frac) > exp {
		frac = strings.TrimRight(frac, "0")
		if len(frac) > exp {
			return 0, Invalid(field, "%s takes at most %d decimal places", currency, exp)
		}
	}
	frac += strings.Repeat("0", exp-len(frac))
	whole = strings.TrimLeft(whole, "0")
	if len(whole)+len(frac) > 16 {
		return 0, Invalid(field, "is too large")
	}
	n, err := strconv.ParseInt("0"+whole+frac, 10, 64)
	if err != nil || n > maxMinor {
		return 0, Invalid(field, "is too large")
	}
	if n == 0 {
		return 0, Invalid(field, "must be greater than zero")
	}
	return n, nil
}

// CheckMinor validates an amount already in minor units.
func CheckMinor(n int64, field string) *Error {
	switch {
	case n <= 0:
		return Invalid(field, "must be greater than zero")
	case n > maxMinor:
		return Invalid(field, "is too large")
	}
	return nil
}

// FormatAmount renders minor units of currency as a decimal string ("12.50").
func FormatAmount(minor int64, currency string) string {
	exp, _ := Exponent(currency)
	neg := minor < 0
	mag := uint64(minor)
	if neg {
		mag = -mag // also right for math.MinInt64, whose negation overflows int64
	}
	s := strconv.FormatUint(mag, 10)
	if exp > 0 {
		if len(s) <= exp {
			s = strings.Repeat("0", exp-len(s)+1) + s
		}
		s = s[:len(s)-exp] + "." + s[len(s)-exp:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
