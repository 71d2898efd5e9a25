"""Word lists and the small string tricks that make one person look different in each tool."""

from __future__ import annotations

FIRST_NAMES = (
    "Robert", "William", "Elizabeth", "Jennifer", "Michael", "Katherine", "James", "Margaret", "Richard",
    "Christopher", "Daniel", "Patricia", "Thomas", "Susan", "Joseph", "Jessica", "Charles", "Sarah", "Matthew",
    "Karen", "Anthony", "Nancy", "Andrew", "Lisa", "Joshua", "Betty", "Steven", "Sandra", "Kenneth", "Ashley",
    "Edward", "Emily", "Timothy", "Donna", "Jonathan", "Michelle", "Nicholas", "Carol", "Samuel", "Amanda",
    "Benjamin", "Melissa", "Alexander", "Deborah", "Gregory", "Stephanie", "Frank", "Rebecca", "Raymond", "Laura",
    "Patrick", "Sharon", "Jack", "Cynthia", "Dennis", "Kathleen", "Jerry", "Amy", "Tyler", "Angela", "Aaron",
    "Helen", "Jose", "Anna", "Henry", "Brenda", "Douglas", "Pamela", "Peter", "Nicole", "Zachary", "Samantha",
    "Walter", "Christine", "Noah", "Emma", "Ethan", "Olivia", "Jeremy", "Victoria", "Priya", "Wei", "Aisha",
    "Mateo", "Sofia", "Hiroshi", "Ingrid", "Kwame", "Lucia", "Omar",
)

NICKNAMES = {
    "Robert": "Bob", "William": "Bill", "Elizabeth": "Liz", "Jennifer": "Jen", "Michael": "Mike",
    "Katherine": "Kate", "James": "Jim", "Margaret": "Maggie", "Richard": "Rick", "Christopher": "Chris",
    "Daniel": "Dan", "Patricia": "Pat", "Thomas": "Tom", "Susan": "Sue", "Joseph": "Joe", "Jessica": "Jess",
    "Charles": "Charlie", "Matthew": "Matt", "Anthony": "Tony", "Andrew": "Andy", "Joshua": "Josh",
    "Steven": "Steve", "Kenneth": "Ken", "Edward": "Ed", "Timothy": "Tim", "Jonathan": "Jon", "Nicholas": "Nick",
    "Samuel": "Sam", "Benjamin": "Ben", "Alexander": "Alex", "Gregory": "Greg", "Stephanie": "Steph",
    "Rebecca": "Becky", "Patrick": "Pat", "Victoria": "Vicky", "Zachary": "Zach", "Samantha": "Sam",
    "Deborah": "Deb", "Raymond": "Ray", "Douglas": "Doug", "Peter": "Pete",
}

LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
    "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson",
    "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner",
    "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy", "Cook",
    "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos",
    "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray",
    "Mendoza", "Ruiz", "Hughes", "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross",
    "Foster", "Jimenez", "Okafor", "Lindqvist", "Tanaka", "Kowalski", "Haddad", "Schneider", "Rossi", "Novak",
    "Fischer", "Dubois", "Silva", "Costa", "Ivanova", "Mensah", "Chen", "Wang", "Singh", "Kumar", "Ali", "Khan",
)

COMPANY_FIRST = (
    "Blue", "Bright", "North", "Silver", "Red", "Green", "Iron", "Cedar", "Summit", "Harbor", "Granite", "Golden",
    "Maple", "River", "Stone", "Falcon", "Pioneer", "Atlas", "Nova", "Vertex", "Quantum", "Coastal", "Prairie",
    "Aurora", "Crescent", "Evergreen", "Lakeside", "Oak", "Pine", "Copper",
)
COMPANY_SECOND = (
    "Harbor", "Peak", "Field", "Bridge", "Wave", "Forge", "Works", "Point", "Ridge", "Line", "Gate", "Path",
    "Light", "Stream", "Labs", "Systems", "Logic", "Cloud", "Data", "Craft", "Motion", "Grid", "Sense", "Shift",
)
COMPANY_SUFFIX = ("Inc", "LLC", "Ltd", "Group", "Co", "Partners", "Corp", "Holdings")
LEGAL_FORMS = frozenset({"Inc", "LLC", "Ltd", "Co", "Corp"})  # the suffixes above that are a legal form
# A namesake abroad: the same name with another legal form, under its country's domain (a planted trap).
NAMESAKE_FORMS = (("GmbH", "de"), ("Ltd", "co.uk"), ("S.A.", "es"), ("AG", "ch"), ("Pty Ltd", "com.au"))
# How a company's name is written: as registered, "Acme, Inc.", "ACME INC", or without its legal form.
COMPANY_NAME_STYLES = ("registered", "punctuated", "upper", "no_legal_form")

INDUSTRIES = (
    "Technology", "Finance", "Healthcare", "Retail", "Manufacturing", "Education", "Media", "Energy",
    "Logistics", "Hospitality",
)

JOB_TITLES = (
    "CEO", "CTO", "VP Sales", "VP Marketing", "Head of Operations", "Account Executive", "Sales Manager",
    "Marketing Manager", "Product Manager", "Software Engineer", "Data Analyst", "Office Manager",
    "Procurement Lead", "Finance Director", "Customer Success Manager", "IT Administrator",
)

LIFECYCLE_STAGES = ("lead", "marketingqualifiedlead", "customer")
OPPORTUNITY_STAGES = ("Prospecting", "Qualification", "Negotiation", "Closed Won", "Closed Lost")
PRODUCTS = ("Platform", "Analytics add-on", "Support plan", "Onboarding", "Enterprise licence", "Renewal")
TICKET_SUBJECTS = (
    "Cannot log in", "Invoice question", "Update my email address", "Feature request", "Export is slow",
    "Password reset", "Billing address change", "Integration error", "Data looks wrong", "Cancel subscription",
)
TICKET_STATUSES = ("new", "open", "pending", "solved", "closed")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
TASK_VERBS = ("Onboard", "Kick-off call with", "Train", "Quarterly review for", "Migrate data for", "Renewal prep for")
INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
PERSONAL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com")
AREA_CODES = ("415", "212", "646", "312", "617", "206", "303", "512", "305", "404", "213", "702")
TEAM = (
    ("Ava", "Lindgren"), ("Marcus", "Bell"), ("Nadia", "Farouk"), ("Owen", "Park"), ("Grace", "Mbeki"),
    ("Leo", "Santos"), ("Ruth", "Kaplan"), ("Yusuf", "Demir"), ("Clara", "Holm"), ("Felix", "Ortega"),
)
TEAM_DOMAIN = "sandboxco.com"


def typo(word: str, position_seed: int) -> str:
    """One-letter typo (a doubled or swapped letter), deterministic for a given seed."""
    if len(word) < 3:
        return word + word[-1]
    i = 1 + position_seed % (len(word) - 2)
    if position_seed % 2:
        return word[:i] + word[i] + word[i:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def whole_name(first: str, last: str) -> str:
    """A name as one text, first name first, as people type it into a single field."""
    return f"{first} {last}"


def company_name(base: str, suffix: str, style: int) -> str:
    """A company's name written in one of `COMPANY_NAME_STYLES`; a suffix that is no legal form is always kept
    as it is ("Blue Harbor Group" is never "Blue Harbor")."""
    registered, written = f"{base} {suffix}", COMPANY_NAME_STYLES[style]
    if written == "upper":
        return registered.upper()
    if suffix not in LEGAL_FORMS or written == "registered":
        return registered
    return f"{base}, {suffix}." if written == "punctuated" else base


def format_phone(e164: str, style: int) -> str:
    """Render a +1 number the way different tools' users type it."""
    area, exchange, line = e164[2:5], e164[5:8], e164[8:]
    return (
        f"({area}) {exchange}-{line}",
        f"+1 {area} {exchange} {line}",
        f"{area}.{exchange}.{line}",
        e164,
    )[style]
