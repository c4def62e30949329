"""Write examples/data/medical_qa_sharegpt.jsonl: 300 medical QA records in MedicalGPT's ShareGPT layout.

Written for medsft's augmentation figures (before/after diversity on real medical wording). The
facts are standard textbook statements about common conditions and their usual first-line drugs,
phrased the way patients ask; doses are typical adult starting doses. It is a test file, not
medical advice. Usage: python scripts/make_medical_qa.py [OUT]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# condition, main symptoms, first-line drug, that drug's usual adult dose, how it is diagnosed,
# who should not take the drug, how to prevent the condition
EN = [
    ("type 2 diabetes", "thirst, frequent urination and tiredness", "metformin", "500 mg twice daily with meals",
     "a fasting glucose or HbA1c blood test", "people with severe kidney disease",
     "keeping a healthy weight and exercising regularly"),
    ("high blood pressure", "usually no symptoms at all", "amlodipine", "5 mg once daily",
     "repeated blood pressure readings above 140/90 mmHg", "people with severe aortic stenosis",
     "eating less salt, exercising and limiting alcohol"),
    ("strep throat", "a sore throat, fever and swollen tonsils", "amoxicillin", "500 mg every 12 hours for 10 days",
     "a rapid strep test or a throat culture", "people allergic to penicillin",
     "washing hands and not sharing cups"),
    ("asthma", "wheezing, cough and shortness of breath", "salbutamol", "100 to 200 micrograms inhaled when needed",
     "spirometry showing reversible airway narrowing", "people allergic to salbutamol",
     "avoiding known triggers such as smoke and dust"),
    ("hypothyroidism", "tiredness, weight gain and feeling cold", "levothyroxine", "1.6 micrograms per kg daily",
     "a blood test showing high TSH and low free T4", "people with untreated adrenal insufficiency",
     "no known way; iodine deficiency should be avoided"),
    ("gastroesophageal reflux disease", "heartburn and acid regurgitation", "omeprazole", "20 mg once daily",
     "typical symptoms that improve with acid suppression", "people taking rilpivirine",
     "avoiding late meals and losing excess weight"),
    ("high cholesterol", "no symptoms", "atorvastatin", "10 to 20 mg once daily", "a fasting lipid panel",
     "pregnant women and people with active liver disease", "a diet low in saturated fat and regular exercise"),
    ("depression", "low mood, loss of interest and poor sleep", "sertraline", "50 mg once daily",
     "a clinical interview using standard criteria", "people taking MAO inhibitors",
     "regular exercise, sleep and social support"),
    ("uncomplicated urinary tract infection", "burning when passing urine and frequent urination",
     "nitrofurantoin", "100 mg twice daily for 5 days", "a urine dipstick or urine culture",
     "people with severely reduced kidney function", "drinking enough fluids"),
    ("influenza", "sudden fever, muscle aches and cough", "oseltamivir", "75 mg twice daily for 5 days",
     "a rapid influenza test during flu season", "people allergic to oseltamivir", "a yearly flu vaccine"),
    ("gout", "sudden severe pain and swelling of a joint, often the big toe", "colchicine",
     "1 mg at once, then 0.5 mg one hour later", "joint fluid showing urate crystals",
     "people with severe kidney or liver disease", "limiting alcohol and purine-rich food"),
    ("migraine", "throbbing headache with nausea and sensitivity to light", "sumatriptan",
     "50 mg at the start of the attack", "the typical history and a normal examination",
     "people with coronary heart disease", "regular sleep and avoiding known triggers"),
    ("iron deficiency anemia", "tiredness, pale skin and shortness of breath", "ferrous sulfate",
     "200 mg once or twice daily", "a blood count and low ferritin", "people with iron overload",
     "eating iron-rich food such as meat and legumes"),
    ("heart failure", "breathlessness, ankle swelling and tiredness", "furosemide", "40 mg once daily",
     "an echocardiogram and a BNP blood test", "people with anuria", "controlling blood pressure"),
    ("atrial fibrillation", "palpitations, an irregular pulse and dizziness", "apixaban", "5 mg twice daily",
     "an electrocardiogram", "people with active bleeding", "limiting alcohol and treating high blood pressure"),
    ("community-acquired pneumonia", "fever, cough with sputum and chest pain", "amoxicillin",
     "1 g three times daily for 5 days", "a chest X-ray",
     "people allergic to penicillin, who are given doxycycline or clarithromycin instead",
     "pneumococcal vaccination and not smoking"),
    ("shingles", "a painful blistering rash on one side of the body", "aciclovir", "800 mg five times daily for 7 days",
     "the typical rash", "people allergic to aciclovir", "the shingles vaccine"),
    ("scabies", "intense itching that is worse at night", "permethrin cream", "5% cream applied to the whole body once",
     "seeing burrows on the skin", "people allergic to permethrin", "treating close contacts at the same time"),
    ("peptic ulcer caused by H. pylori", "burning pain in the upper abdomen", "omeprazole",
     "20 mg twice daily with two antibiotics for 14 days", "a urea breath test or stool antigen test",
     "people taking rilpivirine or nelfinavir", "not using NSAIDs when not needed"),
    ("osteoarthritis", "joint pain that is worse with use and stiffness", "paracetamol",
     "1 g up to four times daily", "the history, examination and X-ray", "people with severe liver disease",
     "keeping a healthy weight and staying active"),
    ("rheumatoid arthritis", "painful swollen joints and morning stiffness", "methotrexate", "7.5 mg once weekly",
     "blood tests for rheumatoid factor and anti-CCP", "pregnant women",
     "no known way; not smoking lowers the risk"),
    ("epilepsy", "recurrent seizures", "levetiracetam", "500 mg twice daily",
     "an EEG and a brain MRI", "people allergic to levetiracetam", "taking medicine regularly and sleeping enough"),
    ("Parkinson's disease", "tremor at rest, stiffness and slow movement", "levodopa",
     "100 mg three times daily with carbidopa", "a clinical examination by a neurologist",
     "people taking MAO inhibitors", "no proven way"),
    ("angina", "chest pain on exertion that eases with rest", "glyceryl trinitrate",
     "400 micrograms under the tongue when needed", "an exercise test or coronary angiography",
     "people taking sildenafil", "not smoking and controlling cholesterol"),
    ("acne", "spots, blackheads and oily skin", "benzoyl peroxide", "5% gel once daily", "the typical skin findings",
     "people allergic to benzoyl peroxide", "gentle washing and not picking spots"),
    ("eczema", "dry, itchy and inflamed skin", "hydrocortisone cream", "1% cream twice daily",
     "the typical rash and history", "people with untreated skin infection", "using emollients every day"),
    ("allergic rhinitis", "sneezing, a runny nose and itchy eyes", "cetirizine", "10 mg once daily",
     "the history and skin prick tests", "people with end-stage kidney disease", "avoiding the allergen"),
    ("constipation", "infrequent hard stools and straining", "lactulose", "15 ml twice daily",
     "the history and examination", "people with galactosemia", "eating fibre and drinking enough water"),
    ("anxiety disorder", "constant worry, restlessness and poor sleep", "sertraline", "25 mg once daily at first",
     "a clinical interview", "people taking MAO inhibitors or pimozide", "regular exercise and limiting caffeine"),
    ("tuberculosis", "a cough for more than three weeks, night sweats and weight loss", "isoniazid",
     "300 mg once daily with other drugs for 6 months", "sputum tests and a chest X-ray",
     "people with acute liver disease", "the BCG vaccine and treating latent infection"),
    ("malaria", "fever with chills and sweating", "artemether with lumefantrine", "four tablets twice daily for 3 days",
     "a blood smear or rapid antigen test", "women in the first trimester of pregnancy",
     "bed nets and preventive medicine when travelling"),
    ("hepatitis B", "often no symptoms; sometimes jaundice and tiredness", "tenofovir", "245 mg once daily",
     "a blood test for hepatitis B surface antigen", "people allergic to tenofovir", "the hepatitis B vaccine"),
    ("chronic obstructive pulmonary disease", "a chronic cough, sputum and breathlessness", "tiotropium",
     "18 micrograms inhaled once daily", "spirometry", "people allergic to atropine-like drugs",
     "not smoking"),
    ("osteoporosis", "no symptoms until a bone breaks", "alendronic acid", "70 mg once weekly",
     "a DEXA bone density scan", "people who cannot stay upright for 30 minutes",
     "calcium, vitamin D and weight-bearing exercise"),
    ("benign prostatic hyperplasia", "a weak urine stream and waking at night to urinate", "tamsulosin",
     "400 micrograms once daily", "the history, examination and a PSA test", "people with severe liver disease",
     "no proven way"),
    ("head lice", "an itchy scalp", "dimeticone lotion", "4% lotion applied twice, 7 days apart",
     "finding live lice by wet combing", "people allergic to dimeticone", "checking the hair of family members"),
    ("vitamin B12 deficiency", "tiredness, pale skin and tingling in the hands and feet", "hydroxocobalamin",
     "1 mg injection every 3 months after loading doses", "a blood test for vitamin B12",
     "people allergic to hydroxocobalamin", "eating animal products or taking supplements if vegan"),
    ("erectile dysfunction", "difficulty getting or keeping an erection", "sildenafil", "50 mg about one hour before sex",
     "the history and blood tests for diabetes and cholesterol", "people taking nitrates",
     "exercise, not smoking and limiting alcohol"),
    ("Lyme disease", "a spreading red rash after a tick bite", "doxycycline", "100 mg twice daily for 10 days",
     "the typical rash after a tick bite", "children under 8 and pregnant women",
     "removing ticks quickly and covering the skin"),
    ("bacterial vaginosis", "a thin grey discharge with a fishy smell", "metronidazole", "400 mg twice daily for 7 days",
     "a vaginal swab", "people who drink alcohol during treatment", "avoiding vaginal douching"),
]

EN_QUESTIONS = [
    ("What are the symptoms of {c}?", "The main symptoms of {c} are {s}."),
    ("How is {c} treated?", "{C} is usually treated first with {d}."),
    ("What is the usual adult dose of {d} for {c}?", "{D}: {dose}."),
    ("How is {c} diagnosed?", "{C} is diagnosed with {test}."),
    ("Who should not take {d}{for_c}?", "{D} should not be used by {avoid}."),
    ("How can {c} be prevented?", "{prevent}."),
]

ZH = [
    ("高血压", "头晕、头痛，很多人没有症状", "氨氯地平", "每日一次，每次5毫克", "多次测量血压高于140/90毫米汞柱",
     "严重主动脉瓣狭窄的患者", "少吃盐、多运动、限制饮酒"),
    ("2型糖尿病", "口渴、多尿、乏力", "二甲双胍", "每次500毫克，每日两次，随餐服用", "空腹血糖或糖化血红蛋白检测",
     "严重肾功能不全的患者", "控制体重、规律运动"),
    ("急性扁桃体炎", "咽痛、发热、扁桃体肿大", "阿莫西林", "每次500毫克，每12小时一次，连用10天", "咽拭子快速检测",
     "青霉素过敏的患者", "勤洗手、不共用餐具"),
    ("胃食管反流病", "烧心、反酸", "奥美拉唑", "每日一次，每次20毫克", "典型症状及抑酸治疗有效",
     "正在服用利匹韦林的患者", "避免睡前进食、减轻体重"),
    ("痛风", "关节突然剧烈疼痛和红肿，常见于大脚趾", "秋水仙碱", "首剂1毫克，一小时后再服0.5毫克",
     "关节液中找到尿酸盐结晶", "严重肝肾功能不全的患者", "限制饮酒和高嘌呤食物"),
    ("哮喘", "喘息、咳嗽、呼吸困难", "沙丁胺醇", "需要时吸入100至200微克", "肺功能检查显示可逆的气道阻塞",
     "对沙丁胺醇过敏的患者", "避开烟雾和尘螨等诱因"),
    ("缺铁性贫血", "乏力、面色苍白、活动后气短", "硫酸亚铁", "每次200毫克，每日一到两次", "血常规和血清铁蛋白降低",
     "铁过载的患者", "多吃瘦肉、动物肝脏等富含铁的食物"),
    ("流行性感冒", "突然发热、全身酸痛、咳嗽", "奥司他韦", "每次75毫克，每日两次，连用5天", "流感快速抗原检测",
     "对奥司他韦过敏的患者", "每年接种流感疫苗"),
    ("带状疱疹", "身体一侧成簇的疼痛性水疱", "阿昔洛韦", "每次800毫克，每日五次，连用7天", "典型皮疹",
     "对阿昔洛韦过敏的患者", "接种带状疱疹疫苗"),
    ("骨质疏松症", "早期没有症状，直到发生骨折", "阿仑膦酸钠", "每周一次，每次70毫克", "双能X线骨密度检查",
     "服药后不能保持直立30分钟的患者", "补充钙和维生素D、坚持负重运动"),
]

ZH_QUESTIONS = [
    ("{c}有哪些症状？", "{c}的主要症状是{s}。"),
    ("{c}怎么治疗？", "{c}一般首先用{d}治疗。"),
    ("{d}治疗{c}的成人剂量是多少？", "{d}：{dose}。"),
    ("{c}怎么诊断？", "{c}通过{test}来诊断。"),
    ("哪些人不能用{d}{for_c}？", "{avoid}不能使用{d}。"),
    ("怎样预防{c}？", "{prevent}。"),
]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def records() -> list[dict]:
    rows = []
    # A drug that treats an earlier condition too is asked about for this one: no question is asked twice.
    for table, questions, for_condition in ((EN, EN_QUESTIONS, " for {c}"), (ZH, ZH_QUESTIONS, "治疗{c}")):
        asked = set()
        for condition, symptoms, drug, dose, test, avoid, prevent in table:
            fill = {"c": condition, "C": _capital(condition), "s": symptoms, "d": drug, "D": _capital(drug),
                    "dose": dose, "test": test, "avoid": avoid, "prevent": _capital(prevent),
                    "for_c": for_condition.format(c=condition) if drug in asked else ""}
            asked.add(drug)
            for question, answer in questions:
                rows.append({"conversations": [{"from": "human", "value": question.format(**fill)},
                                               {"from": "gpt", "value": answer.format(**fill)}]})
    return rows


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/data/medical_qa_sharegpt.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = records()
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} records to {out}")


if __name__ == "__main__":
    main()
