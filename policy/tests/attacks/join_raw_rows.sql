-- expect: prohibited-column
-- Joined rows released raw.
SELECT r.annual_income, h.cost FROM health_visits h JOIN residents r ON h.person_id = r.person_id
