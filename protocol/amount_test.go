package protocol

import (
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestExponent(t *testing.T) {
	tests := []struct {
		currency string
		want     int
		ok       bool
	}{
		{"JPY", 0, true}, {"KRW", 0, true}, {"ISK", 0, true}, {"CLP", 0, true},
		{"USD", 2, true}, {"EUR", 2, true}, {"GBP", 2, true}, {"CHF", 2, true}, {"ZAR", 2, true},
		{"KWD", 3, true}, {"BHD", 3, true}, {"OMR", 3, true}, {"TND", 3, true},
		{"CLF", 4, true}, {"UYW", 4, true},
		{"usd", 0, false}, {"Usd", 0, false}, {"XYZ", 0, false}, {"", 0, false}, {"US", 0, false}, {"USDD", 0, false},
		{"XAU", 0, false}, // a metal, not a currency termhub takes
	}
	for _, tt := range tests {
		t.Run(tt.currency, func(t *testing.T) {
			got, ok := Exponent(tt.currency)
			if got != tt.want || ok != tt.ok {
				t.Errorf("Exponent(%q) = %d, %v; want %d, %v", tt.currency, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestExponentTableShape(t *testing.T) {
	if len(exponents) < 150 {
		t.Errorf("only %d currencies known", len(exponents))
	}
	for c, e := range exponents {
		if len(c) != 3 || strings.ToUpper(c) != c || strings.Trim(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			t.Errorf("currency code %q is not three upper-case letters", c)
		}
		switch e {
		case 0, 2, 3, 4:
		default:
			t.Errorf("currency %s has exponent %d", c, e)
		}
	}
}

func TestParseAmount(t *testing.T) {
	tests := []struct {
		name, in, currency string
		want               int64
		canonical          string // FormatAmount(want); "" means same as in
	}{
		// JPY, exponent 0
		{"jpy one", "1", "JPY", 1, ""},
		{"jpy", "1500", "JPY", 1500, ""},
		{"jpy trailing zeros", "1500.000", "JPY", 1500, "1500"},
		{"jpy trailing zero", "12.0", "JPY", 12, "12"},
		// USD, exponent 2
		{"usd", "12.50", "USD", 1250, ""},
		{"usd one decimal", "12.5", "USD", 1250, "12.50"},
		{"usd whole", "12", "USD", 1200, "12.00"},
		{"usd cent", "0.01", "USD", 1, ""},
		{"usd ten cents", "0.1", "USD", 10, "0.10"},
		{"usd trailing zeros beyond exponent", "12.500", "USD", 1250, "12.50"},
		{"usd many trailing zeros", "12.5000000000", "USD", 1250, "12.50"},
		{"usd float trap 0.29", "0.29", "USD", 29, ""},
		{"usd float trap 1.13", "1.13", "USD", 113, ""},
		{"usd float trap 4.35", "4.35", "USD", 435, ""},
		{"usd large exact", "45035996273704.95", "USD", 4503599627370495, ""},
		{"usd max", "45035996273704.96", "USD", maxMinor, ""},
		// leading zeros
		{"leading zeros", "0012.50", "USD", 1250, "12.50"},
		{"leading zero cent", "00.05", "USD", 5, "0.05"},
		{"many leading zeros", "000000000000000000000000000001", "JPY", 1, "1"},
		{"many leading zeros with fraction", "0000000000000000000000.001", "KWD", 1, "0.001"},
		// KWD, exponent 3
		{"kwd fils", "0.001", "KWD", 1, ""},
		{"kwd", "1.234", "KWD", 1234, ""},
		{"kwd short fraction", "1.2", "KWD", 1200, "1.200"},
		{"kwd trailing zeros", "1.2340", "KWD", 1234, "1.234"},
		// CLF, exponent 4
		{"clf smallest", "0.0001", "CLF", 1, ""},
		{"clf", "1.2345", "CLF", 12345, ""},
		{"clf whole", "3", "CLF", 30000, "3.0000"},
		{"clf trailing zeros", "5.10000", "CLF", 51000, "5.1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, e := ParseAmount(tt.in, tt.currency, "amount")
			if e != nil {
				t.Fatalf("ParseAmount(%q, %s) error %v", tt.in, tt.currency, e)
			}
			if got != tt.want {
				t.Fatalf("ParseAmount(%q, %s) = %d, want %d", tt.in, tt.currency, got, tt.want)
			}
			canon := tt.canonical
			if canon == "" {
				canon = tt.in
			}
			if f := FormatAmount(got, tt.currency); f != canon {
				t.Errorf("FormatAmount(%d, %s) = %q, want %q", got, tt.currency, f, canon)
			}
			if back, e := ParseAmount(canon, tt.currency, "amount"); e != nil || back != got {
				t.Errorf("round trip of %q = %d, %v", canon, back, e)
			}
		})
	}
}

func TestParseAmountRefused(t *testing.T) {
	tests := []struct {
		name, in, currency string
		field              string // "amount" unless the currency is at fault
		msg                string // substring of the message
	}{
		{"usd three decimals", "12.345", "USD", "amount", "at most 2 decimal places"},
		{"usd float trap 1.005", "1.005", "USD", "amount", "decimal places"},
		{"jpy decimals", "1.5", "JPY", "amount", "at most 0 decimal places"},
		{"jpy trailing dot", "1500.", "JPY", "amount", "decimal string"},
		{"kwd four decimals", "0.0001", "KWD", "amount", "at most 3 decimal places"},
		{"clf five decimals", "0.00001", "CLF", "amount", "at most 4 decimal places"},
		{"non-zero after zeros", "12.5001", "USD", "amount", "decimal places"},
		{"zero", "0", "USD", "amount", "greater than zero"},
		{"zero decimals", "0.00", "USD", "amount", "greater than zero"},
		{"zero beyond exponent", "0.000", "USD", "amount", "greater than zero"},
		{"zeros", "0000", "JPY", "amount", "greater than zero"},
		{"negative", "-1", "USD", "amount", "positive"},
		{"negative cents", "-0.01", "USD", "amount", "positive"},
		{"negative zero", "-0", "USD", "amount", "positive"},
		{"plus sign", "+1", "USD", "amount", "decimal string"},
		{"empty", "", "USD", "amount", "decimal string"},
		{"dot", ".", "USD", "amount", "decimal string"},
		{"leading dot", ".5", "USD", "amount", "decimal string"},
		{"trailing dot", "5.", "USD", "amount", "decimal string"},
		{"two dots", "1.2.3", "USD", "amount", "decimal string"},
		{"comma", "1,50", "EUR", "amount", "decimal string"},
		{"thousands separator", "1,000.00", "USD", "amount", "decimal string"},
		{"exponent", "1e2", "USD", "amount", "decimal string"},
		{"hex", "0x10", "USD", "amount", "decimal string"},
		{"leading space", " 1", "USD", "amount", "decimal string"},
		{"trailing space", "1 ", "USD", "amount", "decimal string"},
		{"underscore", "1_000", "JPY", "amount", "decimal string"},
		{"NaN", "NaN", "USD", "amount", "decimal string"},
		{"Inf", "Inf", "USD", "amount", "decimal string"},
		{"arabic-indic digits", "١٢", "JPY", "amount", "decimal string"},
		{"fullwidth digits", "１２", "JPY", "amount", "decimal string"},
		{"currency symbol", "$12", "USD", "amount", "decimal string"},
		{"one over max", "4503599627370497", "JPY", "amount", "too large"},
		{"one cent over max", "45035996273704.97", "USD", "amount", "too large"},
		{"int64 max", "9223372036854775807", "JPY", "amount", "too large"},
		{"beyond int64", "9223372036854775808", "JPY", "amount", "too large"},
		{"huge", strings.Repeat("9", 400), "USD", "amount", "too large"},
		{"huge with fraction", "99999999999999999.99", "USD", "amount", "too large"},
		{"17 digits", "10000000000000000", "JPY", "amount", "too large"},
		{"unknown currency", "12.50", "XYZ", "currency", "unknown currency"},
		{"lower-case currency", "12.50", "usd", "currency", "unknown currency"},
		{"empty currency", "12.50", "", "currency", "unknown currency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, e := ParseAmount(tt.in, tt.currency, "amount")
			if e == nil {
				t.Fatalf("ParseAmount(%q, %s) = %d, want an error", tt.in, tt.currency, got)
			}
			if got != 0 {
				t.Errorf("value %d returned with an error", got)
			}
			if e.Code != CodeInvalidRequest || e.Field != tt.field {
				t.Errorf("error %s/%s, want %s/%s", e.Code, e.Field, CodeInvalidRequest, tt.field)
			}
			if !strings.Contains(e.Message, tt.msg) {
				t.Errorf("message %q does not mention %q", e.Message, tt.msg)
			}
		})
	}
}

func TestParseAmountFieldName(t *testing.T) {
	for _, field := range []string{"amount", "refund.amount", "capture"} {
		t.Run(field, func(t *testing.T) {
			if _, e := ParseAmount("1.234", "USD", field); e == nil || e.Field != field {
				t.Errorf("error %v, want field %q", e, field)
			}
			// The currency is named as such whatever the amount field is.
			if _, e := ParseAmount("1", "QQQ", field); e == nil || e.Field != "currency" {
				t.Errorf("error %v, want field currency", e)
			}
		})
	}
}

func TestFormatAmount(t *testing.T) {
	tests := []struct {
		minor    int64
		currency string
		want     string
	}{
		{0, "USD", "0.00"},
		{1, "USD", "0.01"},
		{5, "USD", "0.05"},
		{10, "USD", "0.10"},
		{99, "USD", "0.99"},
		{100, "USD", "1.00"},
		{1250, "USD", "12.50"},
		{-1250, "USD", "-12.50"},
		{-5, "USD", "-0.05"},
		{0, "JPY", "0"},
		{7, "JPY", "7"},
		{1500, "JPY", "1500"},
		{-1500, "JPY", "-1500"},
		{1, "KWD", "0.001"},
		{1234, "KWD", "1.234"},
		{1000, "KWD", "1.000"},
		{1, "CLF", "0.0001"},
		{12345, "CLF", "1.2345"},
		{maxMinor, "USD", "45035996273704.96"},
		{math.MaxInt64, "JPY", "9223372036854775807"},
		{math.MaxInt64, "CLF", "922337203685477.5807"},
		{math.MinInt64, "JPY", "-9223372036854775808"},
		{math.MinInt64, "USD", "-92233720368547758.08"},
		{1250, "XYZ", "1250"}, // unknown currency: no decimals
	}
	for _, tt := range tests {
		t.Run(tt.currency+"/"+strconv.FormatInt(tt.minor, 10), func(t *testing.T) {
			if got := FormatAmount(tt.minor, tt.currency); got != tt.want {
				t.Errorf("FormatAmount(%d, %s) = %q, want %q", tt.minor, tt.currency, got, tt.want)
			}
		})
	}
}

// TestRoundTripEveryCurrency checks ParseAmount(FormatAmount(n)) == n for
// every known currency over values around each power of ten.
func TestRoundTripEveryCurrency(t *testing.T) {
	var values []int64
	for p := int64(1); p > 0 && p <= maxMinor; p *= 10 {
		values = append(values, p, p+1, p*9/10+p/10*9/10)
		if p > 1 {
			values = append(values, p-1)
		}
	}
	values = append(values, 12345, 1250, 4503599627370495, maxMinor)
	for cur, exp := range exponents {
		t.Run(cur, func(t *testing.T) {
			for _, n := range values {
				if n <= 0 {
					continue
				}
				s := FormatAmount(n, cur)
				if exp > 0 && (strings.Count(s, ".") != 1 || len(s)-strings.Index(s, ".")-1 != exp) {
					t.Errorf("FormatAmount(%d, %s) = %q, want %d decimals", n, cur, s, exp)
				}
				if exp == 0 && strings.Contains(s, ".") {
					t.Errorf("FormatAmount(%d, %s) = %q has a dot", n, cur, s)
				}
				got, e := ParseAmount(s, cur, "amount")
				if e != nil || got != n {
					t.Errorf("ParseAmount(FormatAmount(%d, %s) = %q) = %d, %v", n, cur, s, got, e)
				}
			}
		})
	}
}

func TestCheckMinor(t *testing.T) {
	tests := []struct {
		n   int64
		msg string // "" = ok
	}{
		{1, ""}, {1250, ""}, {maxMinor, ""},
		{0, "greater than zero"}, {-1, "greater than zero"}, {math.MinInt64, "greater than zero"},
		{maxMinor + 1, "too large"}, {math.MaxInt64, "too large"},
	}
	for _, tt := range tests {
		t.Run(strconv.FormatInt(tt.n, 10), func(t *testing.T) {
			e := CheckMinor(tt.n, "amountMinor")
			switch {
			case tt.msg == "" && e != nil:
				t.Errorf("CheckMinor(%d) = %v", tt.n, e)
			case tt.msg != "" && (e == nil || e.Field != "amountMinor" || e.Code != CodeInvalidRequest || !strings.Contains(e.Message, tt.msg)):
				t.Errorf("CheckMinor(%d) = %v, want invalid_request/amountMinor %q", tt.n, e, tt.msg)
			}
		})
	}
}

// TestMaxMinorNoOverflow: a sale plus every refund of it cannot overflow.
func TestMaxMinorNoOverflow(t *testing.T) {
	if maxMinor > math.MaxInt64/1024 {
		t.Errorf("maxMinor %d leaves no room to sum amounts", maxMinor)
	}
}

// TestNoFloatInAmountCode parses the amount code and fails on any float type,
// float conversion or math package use: amounts must stay exact.
func TestNoFloatInAmountCode(t *testing.T) {
	for _, file := range []string{"amount.go", "decode.go"} {
		t.Run(file, func(t *testing.T) {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, file, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				switch p, _ := strconv.Unquote(imp.Path.Value); p {
				case "math", "math/big":
					t.Errorf("%s imports %s", file, p)
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.Ident:
					if x.Name == "float32" || x.Name == "float64" {
						t.Errorf("%s: %s uses %s", file, fset.Position(x.Pos()), x.Name)
					}
				case *ast.SelectorExpr:
					switch x.Sel.Name {
					case "ParseFloat", "FormatFloat", "AppendFloat", "Float64", "Float32", "Number":
						t.Errorf("%s: %s uses %s", file, fset.Position(x.Pos()), x.Sel.Name)
					}
				case *ast.BasicLit:
					if x.Kind == token.FLOAT {
						t.Errorf("%s: %s has float literal %s", file, fset.Position(x.Pos()), x.Value)
					}
				}
				return true
			})
		})
	}
}
